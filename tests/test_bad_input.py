"""The bad-input table: each broken input makes `vsreid predict` exit 2 before any network pass, with one line on
stderr naming the file and the problem, and nothing partial or stale in the output; the odd-but-valid inputs run."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from davis_roots import write_davis_root
from lightning_helpers import REPO, SYNTHETIC, predict_config, tiny_weights
from vsreid.cli import main
from vsreid.data.flow import write_flo
from vsreid.data.labels import read_frame, read_labels, write_labels

SEQ = "s0"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A 26-frame synthetic root, tiny weights and a predict config without re-ID (built once, copied per test)."""
    base = tmp_path_factory.mktemp("pristine")
    write_davis_root(base / "root", {SEQ: 26}, **SYNTHETIC)
    tiny_weights(base / "tiny.pt")
    return base


@pytest.fixture
def case(pristine, tmp_path):
    """(root, config, output) on a private copy of the pristine root."""
    root = tmp_path / "root"
    shutil.copytree(pristine / "root", root)
    cfg = predict_config(tmp_path / "predict.yaml", root, pristine / "tiny.pt", tmp_path / "logs", reid=False)
    return root, cfg, tmp_path / "out"


def predict(cfg: Path, out: Path, *extra: str, capfd) -> tuple[int, str, str]:
    code = main(["predict", "-c", str(cfg), "--output", str(out), *map(str, extra)])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


def frame(root: Path, t: int) -> Path:
    return root / "JPEGImages/480p" / SEQ / f"{t:05d}.jpg"


def annotation(root: Path, t: int) -> Path:
    return root / "Annotations/480p" / SEQ / f"{t:05d}.png"


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def rgb_annotation(root: Path) -> Path:
    path = annotation(root, 4)
    Image.new("RGB", (104, 64), (128, 0, 0)).save(path)
    return path


def sixteen_bit_annotation(root: Path) -> Path:
    path = annotation(root, 4)
    Image.fromarray(np.zeros((64, 104), np.uint16)).save(path)
    return path


def resized_frame(root: Path) -> Path:
    path = frame(root, 7)
    Image.new("RGB", (120, 64)).save(path, format="JPEG")
    return path


def empty_first_mask(root: Path) -> Path:
    path = annotation(root, 0)
    write_labels(path, np.zeros_like(read_labels(path)))
    return path


def gap(root: Path) -> Path:
    frame(root, 5).unlink()
    annotation(root, 5).unlink()
    return root / "JPEGImages/480p" / SEQ


def unpadded_names(root: Path) -> Path:
    for t in range(26):
        frame(root, t).rename(frame(root, t).with_name(f"{t}.jpg"))
        annotation(root, t).rename(annotation(root, t).with_name(f"{t}.png"))
    return frame(root, 0).with_name("0.jpg")


def extra_annotation(root: Path) -> Path:
    path = annotation(root, 30)
    shutil.copy(annotation(root, 1), path)
    return path


def zero_byte_jpeg(root: Path) -> Path:
    path = frame(root, 9)
    path.write_bytes(b"")
    return path


def wrong_flo(root: Path) -> Path:
    path = root / "Flow/480p" / SEQ / "00002.flo"
    write_flo(path, np.zeros((10, 12, 2), np.float32))
    return path


# (case name, mutation returning the file the error must name, problem text)
ROWS = [
    ("truncated JPEG", lambda r: truncate(frame(r, 3)), "truncated JPEG"),
    ("RGB annotation", rgb_annotation, "RGB image, expected a palette or grayscale id map"),
    ("16-bit annotation", sixteen_bit_annotation, "expected an 8-bit palette or grayscale id map"),
    ("frame of another size", resized_frame, "frame size 120x64 differs from the first frame's 104x64"),
    ("empty first mask", empty_first_mask, "first-frame mask is empty"),
    ("gap in the frames", gap, "missing frames 00005"),
    ("unpadded frame names", unpadded_names, "number frames with one width"),
    ("annotation without frame", extra_annotation, "annotation without a frame"),
    ("zero-byte JPEG", zero_byte_jpeg, "unreadable image"),
    ("wrong .flo size", wrong_flo, "flow is 12x10, frames are 104x64"),
]


def assert_refused(code: int, err: str, named: Path, problem: str, out: Path) -> None:
    """Exit 2 and one line naming ``named``; in-process, pytest's log capture adds Lightning's "INFO:" notes to
    stderr, which a real run prints on stdout (checked by ``test_one_line_on_stderr_in_a_real_run``)."""
    lines = [line for line in err.strip().splitlines() if not line.startswith("INFO: ")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert str(named) in lines[0] and problem in lines[0], lines[0]
    assert not list(out.rglob("*.png")), "a result was written before the input was refused"


@pytest.mark.parametrize("name, mutate, problem", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_before_compute(case, capfd, name, mutate, problem):
    root, cfg, out = case
    named = mutate(root)
    code, _, err = predict(cfg, out, capfd=capfd)
    assert_refused(code, err, named, problem, out)


def test_one_line_on_stderr_in_a_real_run(case):
    root, cfg, out = case
    named = truncate(frame(root, 3))
    proc = subprocess.run([sys.executable, "-m", "vsreid", "predict", "-c", str(cfg), "--output", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert_refused(proc.returncode, proc.stderr, named, "truncated JPEG (no end-of-image marker)", out)


@pytest.mark.parametrize("name, content, problem", [
    ("missing", None, "checkpoint not found"), ("text", b"hello\n", "not a PyTorch checkpoint"),
    ("truncated", "half", "not a PyTorch checkpoint")])
def test_bad_checkpoint_is_refused(case, pristine, capfd, name, content, problem):
    root, cfg, out = case
    path = cfg.parent / f"{name}.pt"
    if content == "half":
        data = (pristine / "tiny.pt").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif content is not None:
        path.write_bytes(content)
    code, _, err = predict(cfg, out, "--model.init_from", path, capfd=capfd)
    assert_refused(code, err, path, problem, out)


def test_unwritable_output_is_refused(case, capfd):
    root, cfg, out = case
    blocker = cfg.parent / "a-file"
    blocker.write_text("")  # even root cannot create a folder below a file
    code, _, err = predict(cfg, blocker / "out", capfd=capfd)
    assert_refused(code, err, blocker / "out", "output folder not writable", out)


def test_empty_sequence_list_is_an_error_and_duplicates_run_once(case, capfd):
    root, cfg, out = case
    code, _, err = predict(cfg, out, "--data.sequences", "[]", capfd=capfd)
    assert code == 2 and "empty sequence list" in err and str(root) in err
    code, stdout, err = predict(cfg, out, "--data.sequences", f"[{SEQ},{SEQ}]", capfd=capfd)
    assert code == 0, err
    assert "run once: s0" in stdout and json.loads((out / SEQ / ".done").read_text())["frames"] == 26


def test_wrong_length_pickle_is_refused_before_compute(case, capfd):
    import pickle

    root, cfg, out = case
    write_davis_root(root, [], splits={"val": [SEQ]})
    for folder in ("PersonSearch", "ObjectSearch"):
        (root / folder / "480p").mkdir(parents=True)
        (root / folder / "480p/val.pkl").write_bytes(pickle.dumps([[np.zeros((0, 6))]] * 20, protocol=2))
    (root / "Class/480p").mkdir(parents=True)
    (root / "Class/480p/val.pkl").write_bytes(pickle.dumps({SEQ: [np.array([0.1, 0.9])]}, protocol=2))
    config = yaml.safe_load(cfg.read_text())
    config["model"].update(reid=True, reid_provider="original", reid_split="val")
    cfg.write_text(yaml.safe_dump(config))
    code, _, err = predict(cfg, out, "--data.split", "val", capfd=capfd)
    assert_refused(code, err, root / "PersonSearch/480p/val.pkl", "20 frames", out)


@pytest.mark.parametrize("frames", [1, 2])
def test_one_and_two_frame_sequences_run(case, capfd, frames):
    root, cfg, out = case
    for t in range(frames, 26):
        frame(root, t).unlink()
        annotation(root, t).unlink()
    code, stdout, err = predict(cfg, out, capfd=capfd)
    assert code == 0, err
    assert sorted(p.name for p in (out / SEQ).glob("*.png")) == [f"{t:05d}.png" for t in range(frames)]
    assert "no J&F" in stdout and (out / SEQ / ".done").exists()


def test_rerun_with_other_settings_recomputes_and_same_settings_skip(case, capfd):
    root, cfg, out = case
    assert predict(cfg, out, capfd=capfd)[0] == 0
    stamps = {p: p.stat().st_mtime_ns for p in (out / SEQ).glob("*.png")}
    record = json.loads((out / SEQ / ".done").read_text())
    code, stdout, _ = predict(cfg, out, capfd=capfd)
    assert code == 0 and "skipping 1 sequence(s) finished with the same settings" in stdout
    assert all(p.stat().st_mtime_ns == m for p, m in stamps.items())
    code, stdout, _ = predict(cfg, out, "--model.refine_iterations", "0", "--model.flip", "false", capfd=capfd)
    assert code == 0 and f"recomputing {SEQ}" in stdout
    assert all(p.stat().st_mtime_ns != m for p, m in stamps.items())
    assert json.loads((out / SEQ / ".done").read_text())["settings"] != record["settings"]


def test_settings_digest_follows_the_code_defaults(monkeypatch):
    """Results are finished only for the settings that made them, including those the code's defaults fill in: a
    release whose recovery rules or embedded re-ID provider default to something else recomputes them."""
    from dataclasses import dataclass
    from types import SimpleNamespace

    from vsreid.engine import reid, segmenter
    from vsreid.lightning.cli import settings_digest

    model = SimpleNamespace(hparams={"reid": True, "finetune_steps": 0})
    digest = lambda: settings_digest(model, None, None)  # noqa: E731
    shipped = digest()
    assert digest() == shipped

    @dataclass
    class StricterRecovery(segmenter.RecoveryConfig):
        score_threshold: float = 0.9

    class NearerProvider(reid.AppearanceReID):
        def __init__(self, drift_near: float | None = 0.7, **kwargs):
            super().__init__(drift_near=drift_near, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(segmenter, "RecoveryConfig", StricterRecovery)
        assert digest() != shipped
    with monkeypatch.context() as patch:
        patch.setattr(reid, "AppearanceReID", NearerProvider)
        assert digest() != shipped
    assert digest() == shipped
    model.hparams["reid_score_threshold"] = 0.9  # an argument changes it as before
    assert digest() != shipped


def test_orphaned_temporaries_are_removed_and_live_ones_kept(case, capfd):
    root, cfg, out = case
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (out / SEQ).mkdir(parents=True)
    orphan = out / SEQ / f".00003.png.{dead}-abc123.tmp"
    live = out / SEQ / f".00004.png.{os.getpid()}-abc123.tmp"
    orphan.write_bytes(b"x")
    live.write_bytes(b"x")
    assert predict(cfg, out, capfd=capfd)[0] == 0
    assert not orphan.exists() and live.exists()


def test_two_concurrent_predicts_into_one_output(pristine, tmp_path):
    root = tmp_path / "root"
    write_davis_root(root, {"s0": 26, "s1": 27, "s2": 28}, **SYNTHETIC)
    cfg = predict_config(tmp_path / "predict.yaml", root, pristine / "tiny.pt", tmp_path / "logs", reid=False)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "vsreid", "predict", "-c", str(cfg), "--output", str(out)]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    if [p.returncode for p in procs] != [0, 0]:  # pytest.fail keeps the whole message, an assert would cut it
        pytest.fail("exit codes %s; the end of each stderr:\n%s" % ([p.returncode for p in procs],
                                                                  "\n----\n".join(e[-4000:] for e in errors)))
    for seq, n in zip(("s0", "s1", "s2"), (26, 27, 28)):
        assert len(list((out / seq).glob("*.png"))) == n and (out / seq / ".done").exists()
    assert not [p for p in out.rglob(".*") if p.name != ".done"], "temporary files left behind"
    for png in out.rglob("*.png"):
        with Image.open(png) as im:
            im.load()


def test_writer_leaves_a_sequence_another_run_finished_meanwhile(tmp_path):
    """Two runs into one folder: the second to finish a sequence with the same settings keeps the first's record
    (no window where the sequence looks unfinished); a record of other settings is replaced."""
    from types import SimpleNamespace

    from vsreid.data.results import ResultsFolder, Status
    from vsreid.lightning.callbacks import DavisWriter

    labels = np.zeros((3, 8, 8), np.uint8)
    labels[:, 2:5, 2:5] = 1
    prediction = SimpleNamespace(item=SimpleNamespace(sequence="s0"),
                                 info=SimpleNamespace(frame_stems=["00000", "00001", "00002"]),
                                 result=SimpleNamespace(labels=labels, draft=labels, report=None, seconds=1.0))
    trainer = SimpleNamespace(global_rank=0)
    folder = ResultsFolder(tmp_path)
    writer = DavisWriter(str(tmp_path), draft=False)
    writer.settings = "digest-a"
    folder.mark_done("s0", 3, 1, "digest-a", 5.0)  # the other run
    writer.write_on_batch_end(trainer, None, prediction, None, None, 0)
    assert folder.record("s0")["rank"] == 1 and not list((tmp_path / "s0").glob("*.png"))
    writer.settings = "digest-b"
    writer.write_on_batch_end(trainer, None, prediction, None, None, 0)
    assert folder.record("s0")["rank"] == 0 and len(list((tmp_path / "s0").glob("*.png"))) == 3
    assert folder.status("s0", "digest-b", 3) is Status.DONE


def test_check_command_lists_every_problem(case, capfd):
    root, _, _ = case
    write_davis_root(root, {"s0": 26, "s1": 26, "s2": 27}, **SYNTHETIC)  # s0 (the copy's), s1, s2
    truncate(frame(root, 3))
    empty_first_mask_of = annotation(root, 0).parent.parent / "s2" / "00000.png"
    write_labels(empty_first_mask_of, np.zeros_like(read_labels(empty_first_mask_of)))
    code = main(["check", str(root), "--no-progress"])
    out, err = capfd.readouterr()
    assert code == 2
    assert err.strip().splitlines() == [f"{frame(root, 3)}: truncated JPEG (no end-of-image marker)",
                                        f"{empty_first_mask_of}: first-frame mask is empty (no object to segment)"]
    assert "3 sequence(s)" in out and "2 problem(s)" in out


def test_predict_says_what_it_did(case, capfd):
    """The closing summary names the output, frames and seconds per sequence and the J&F `vsreid evaluate` prints;
    no flow is written into the data folder and no hp_metric placeholder into TensorBoard."""
    import re

    from vsreid.metrics.evaluation import evaluate_results

    root, cfg, out = case
    code, stdout, err = predict(cfg, out, "--overlays", "true", capfd=capfd)
    assert code == 0, err
    assert f"1 sequence(s) written to {out} by 1 process(es)" in stdout
    assert (out / "overlays" / f"{SEQ}.mp4").stat().st_size > 0
    assert read_frame(out / "overlays" / f"{SEQ}.png").shape == (64, 4 * 104, 3)
    row = re.search(rf"^\s+{SEQ}\s+26\s+[\d.]+\s+([\d.]+)$", stdout, re.M)
    total = re.search(r"J&F ([\d.]+) over the 1 sequence", stdout)
    expected = 100 * evaluate_results(root, out, sequences=[SEQ], progress=False).global_results["J&F-Mean"]
    assert row and total and float(total.group(1)) == pytest.approx(expected, abs=0.05)
    logdir = re.search(r"TensorBoard: tensorboard --logdir (\S+)", stdout).group(1)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(logdir).Reload().Tags()["scalars"]
    assert f"predict/{SEQ}/J&F_final" in tags and "hp_metric" not in tags
    assert sorted(p.name for p in root.iterdir()) == ["Annotations", "JPEGImages", "synthetic"]
