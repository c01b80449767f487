"""The profile's evaluation settings beyond CMC/mAP (verification, open-set, re-ranking, groups)."""
from __future__ import annotations

from dataclasses import dataclass

from .validation import ConfigError, check_increasing, setting


@dataclass
class EvaluationCfg:
    """Evaluation settings beyond CMC/mAP. None of them changes the trained weights (all outside the
    run hash): changing one re-evaluates a finished run and never retrains it."""
    verification: bool = setting(True, identity=False)     # 1:1 genuine/impostor pairs per split
    fmr_targets: list[float] = setting([0.01, 0.001], identity=False)   # FNMR reported at these FMR
    open_set: bool = setting(True, identity=False)          # 1:N with part of the test ids enrolled
    enrolled_share: float = setting(0.5, identity=False)    # share of test ids enrolled per split
    fpir_targets: list[float] = setting([0.01, 0.1], identity=False)    # FNIR reported at these FPIR
    rerank: bool = setting(False, identity=False)           # k-reciprocal re-ranking of the rank metrics
    k1: int = setting(20, ge=1, identity=False)             # Zhong et al. 2017 defaults
    k2: int = setting(6, ge=1, identity=False)
    lambda_value: float = setting(0.3, ge=0, le=1, identity=False)
    n_boot: int = setting(1000, ge=1, identity=False)       # identity resamples of the EER interval
    groups: bool = setting(True, identity=False)            # per gender / skin colour / age band
    age_bands: list[int] = setting([21, 26], ge=1, identity=False)  # lower edges of the bands after the first

    def check(self, where: str) -> None:
        for key in ("fmr_targets", "fpir_targets"):
            for i, v in enumerate(getattr(self, key)):
                if not 0 < v < 1:
                    raise ConfigError(f"{where}.{key}[{i}]: must be strictly between 0 and 1, got {v} "
                                      "(a rate such as 0.01 for 1 %)")
        if not 0 < self.enrolled_share < 1:
            raise ConfigError(f"{where}.enrolled_share: must be strictly between 0 and 1, got "
                              f"{self.enrolled_share} (0 enrols nobody, 1 leaves no non-mated searches)")
        check_increasing(self.age_bands, f"{where}.age_bands")
