"""Data pipeline: corpus -> tokenizer -> token memmaps -> seeded, resumable batches.

    from train.data import DataConfig, prepare_data
    data = prepare_data(DataConfig())                       # embedded KJV + Shakespeare, BPE 2048
    batches = data.train_batches(seq_len=256, global_batch_size=32, micro_batch_size=8)
    x, y = batches.batch(step=0, micro_step=0)              # LongTensors (8, 256)
    check_repeats(tokens_needed, batches.unique_tokens, cfg.repeat_policy)

Nothing here imports torch until a batch is made (the planner can use prepare_data and
check_repeats without it). See docs/data.md.
"""

from .batches import TokenBatches, ValBatches, check_repeats
from .config import DataConfig
from .errors import DataError, RepeatedDataWarning
from .prepare import PreparedData, cache_key, find_prepared, load_prepared, prepare_data, token_dtype
from .tokenizer import hf_tokenizer, load_tokenizer

__all__ = [
    "DataConfig", "DataError", "RepeatedDataWarning", "PreparedData", "prepare_data", "load_prepared",
    "cache_key", "token_dtype", "load_tokenizer", "hf_tokenizer", "TokenBatches", "ValBatches",
    "check_repeats", "find_prepared",
]

