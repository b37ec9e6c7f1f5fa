"""Re-identification: candidate providers (embedded appearance search, the original's pickles), the recovery loop and
its per-sequence report."""
from .appearance import AppearanceReID
from .original import OriginalSearchResults
from .provider import ReIDProvider
from .recovery import PERSON_CLASS, Recovery, RecoveryConfig, RecoveryLog, presence, recover
from .report import build_report, draft_presence

__all__ = ["AppearanceReID", "OriginalSearchResults", "PERSON_CLASS", "ReIDProvider", "Recovery", "RecoveryConfig",
           "RecoveryLog", "build_report", "draft_presence", "presence", "recover"]
