"""Training, shared by every method: the loop (phases, checkpoints, logs), the loss registry and
losses, ReID heads, the P x K sampler, on-device augmentation and learning-rate schedules.
Nothing here imports a method."""
from .augment import AugmentCfg, DeviceAugment
from .data import TrainData, validation_metrics
from .losses import LOSS_TERMS, check_loss_weights, register_term, term_label, weighted_total
from .loop import NonFiniteLossError, PartialState, Phase, Trainer, is_finished, load_log, load_weights
from .sampler import PKSampler
from .schedules import set_lr, step_decay, warmup_cosine, warmup_multistep

__all__ = ["AugmentCfg", "DeviceAugment", "LOSS_TERMS", "NonFiniteLossError", "PKSampler",
           "PartialState", "Phase", "TrainData", "Trainer", "check_loss_weights", "is_finished",
           "load_log", "load_weights", "register_term", "set_lr", "step_decay", "term_label",
           "validation_metrics", "warmup_cosine", "warmup_multistep", "weighted_total"]
