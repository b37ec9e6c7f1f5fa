"""The shipped configs, installed with the package as vsreid.configs (vsreid predict -c davis_lite finds them by name)."""
