"""YAML configs validated into dataclasses, and the one override form used everywhere.

One YAML file = one run description. Unknown keys are errors (a typo must not silently fall back
to a default), every numeric setting has a declared range, and every error names the file or the
`-p` override the bad key came from. Schemas shared by every method live here (profile, data,
protocol, backbone); a method's own schema lives next to the method.

Field metadata understood by `build`:
- `ge`, `gt`, `le`: numeric bounds (also applied to each item of a list);
- `identity=False`: the setting does not change the trained weights (seeds, batch size of
  evaluation, compile mode...), so it is left out of the run hash;
- `internal=True`: filled by code, never read from YAML.

Modules by job: `validation` (building dataclasses, plain-data views), `overrides` (the `-p`
form), `files` (paths, YAML files), `profile` (the shared schemas, `load_profile`), `evaluation` (the
profile's evaluation settings).
"""
from .evaluation import EvaluationCfg
from .files import (CONFIG_DIR, REPO_ROOT, display_path, load_yaml, repo_path, resolve_config_path)
from .overrides import (Override, merge_into, parse_override, parse_overrides)
from .profile import (ASPECTS, BackboneCfg, DataCfg, DatasetRef, HD_ASPECT, HD_KINDS, PROFILE_KEYS, Profile,
                      ProtocolCfg, SyntheticCfg, SyntheticHdCfg, TransferCfg, load_profile)
from .validation import (ConfigError, build, check_increasing, config_diff, flatten, identity_dict, setting,
                         to_dict)

__all__ = ["ASPECTS", "BackboneCfg", "CONFIG_DIR", "ConfigError", "DataCfg", "DatasetRef", "EvaluationCfg", "HD_ASPECT",
           "HD_KINDS", "Override", "PROFILE_KEYS", "Profile", "ProtocolCfg", "REPO_ROOT", "SyntheticCfg",
           "SyntheticHdCfg", "TransferCfg", "build", "check_increasing", "config_diff", "display_path",
           "flatten", "identity_dict", "load_profile", "load_yaml", "merge_into", "parse_override",
           "parse_overrides", "repo_path", "resolve_config_path", "setting", "to_dict"]
