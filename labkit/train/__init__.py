"""Training stages of the kit.

SFT on (prompt, answer) pairs: `train_sft(model, tokenizer, pairs, SFTConfig(...))`.
"""

from labkit.train.sft import SFTConfig, SFTResult, StepInfo, StopTraining, train_sft

__all__ = ["SFTConfig", "SFTResult", "StepInfo", "StopTraining", "train_sft"]
