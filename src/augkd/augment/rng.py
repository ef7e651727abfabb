"""Counter-based randomness: every random number is a pure function of (seed, epoch, index, slot).

augkd never draws augmentation parameters from a global RNG stream. Instead each number is a hash of a
key, so the same image in the same epoch gets the same augmentation whatever the batch size, batch order,
device or number of processes. This is what makes augmented batches replayable, runs resumable bit-exactly
and a teacher's soft labels cacheable per (epoch, index).

The hash is Chris Wellons' ``lowbias32`` integer mixer evaluated in int64 arithmetic and masked to 32 bits,
which gives identical results on CPU and CUDA (integer ops only, no floating point until the final scaling).

Slots name the independent random streams of one sample. Each consumer owns a distinct slot constant
(see :data:`SLOTS`), so adding a new random choice never changes the numbers drawn by an existing one.

Example:
    >>> idx = torch.arange(4)
    >>> u = uniform(seed=0, epoch=3, index=idx, slot=SLOTS["crop_y"])
    >>> bool((u >= 0).all() and (u < 1).all())
    True
"""

from __future__ import annotations

import torch

__all__ = [
    "SLOTS",
    "hash32",
    "key",
    "key_to_randint",
    "key_to_uniform",
    "keys",
    "randint",
    "seed_global_stream",
    "stream_seed",
    "uniform",
]

_MASK32 = 0xFFFFFFFF

#: Named random streams. Values are arbitrary but must never change once released (replay depends on them).
SLOTS: dict[str, int] = {
    # base augmentation
    "crop_y": 1,
    "crop_x": 2,
    "flip": 3,
    "rrc_scale": 4,
    "rrc_ratio": 5,
    # training (augkd.train.loop): the seed of torch's global RNG per epoch (dropout, Shake-Shake, ShakeDrop)
    "epoch_seed": 7,
    # Cutout after the policy (augkd.augment.base.Cutout): the square's centre
    "cutout_y": 8,
    "cutout_x": 9,
    # data (augkd.data.memory): the seeded, stratified subset draw
    "subset": 10,
    # training (augkd.train.loop): the seed of torch's global RNG while the model's weights are initialized
    # (the run seed itself, see stream_seed)
    "init": 11,
    # Mixup / CutMix (augkd.augment.mix): apply or not, Mixup or CutMix, the box centre, the partner
    "mix_apply": 12,
    "mix_switch": 13,
    "mix_box_y": 14,
    "mix_box_x": 15,
    "mix_partner": 16,
    # policies (augkd.augment.policies): slots 100.. are per policy step, see policies for the layout
    "subpolicy": 100,
    "policy_base": 1000,
    # Mixup / CutMix lambda (augkd.augment.mix): Beta(a, a) = X / (X + Y), each Gamma variate drawn by
    # Marsaglia-Tsang from 3 slots per try plus one for the alpha < 1 boost; X from 200.., Y from 230..
    "mix_gamma_x": 200,
    "mix_gamma_y": 230,
}


def hash32(x: torch.Tensor) -> torch.Tensor:
    """Mix a tensor of non-negative int64 values (< 2**32) into well-distributed 32-bit values (as int64)."""
    x = x & _MASK32  # a fresh tensor: the rest runs in place (same values, fewer allocations)
    x ^= x >> 16
    x.mul_(0x7FEB352D).bitwise_and_(_MASK32)
    x ^= x >> 15
    x.mul_(0x846CA68B).bitwise_and_(_MASK32)
    x ^= x >> 16
    return x


def _hash32_int(x: int) -> int:
    """:func:`hash32` on one Python int (the scalar parts of a key are folded on the host, without tensors)."""
    x &= _MASK32
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    x ^= x >> 16
    return x


def key(seed: int, epoch: int, index: torch.Tensor, slot: int) -> torch.Tensor:
    """32-bit key for each sample index: a chained hash of seed, epoch, slot and index.

    Args:
        seed: run seed (any int; reduced to 32 bits).
        epoch: epoch number (>= 0).
        index: int tensor of dataset indices, any shape and device.
        slot: stream identifier, one per random choice (see :data:`SLOTS`).
    """
    index = index.to(torch.int64)
    h = hash32(index ^ _base(seed, epoch, slot))
    h ^= 0x5BD1E995
    return hash32(h)


def _base(seed: int, epoch: int, slot: int) -> int:
    base = _hash32_int(seed ^ 0x9E3779B9)
    base = _hash32_int(base ^ (epoch & _MASK32))
    return _hash32_int(base ^ (slot & _MASK32))


def keys(seed: int, epoch: int, index: torch.Tensor, slots: list[int] | tuple[int, ...]) -> torch.Tensor:
    """:func:`key` for several slots at once: (len(slots), *index.shape), row ``i`` equal to ``key(..., slots[i])``.

    One pass of the hash over all slots instead of one per slot (fewer kernel launches for small batches).
    """
    index = index.to(torch.int64)
    bases = torch.tensor([_base(seed, epoch, s) for s in slots], dtype=torch.int64, device=index.device)
    h = hash32(index.unsqueeze(0) ^ bases.view(-1, *([1] * index.ndim)))
    h ^= 0x5BD1E995
    return hash32(h)


def key_to_uniform(k: torch.Tensor) -> torch.Tensor:
    """Keys to float32 uniforms in [0, 1), as :func:`uniform` maps them."""
    return (k >> 8).to(torch.float32) * (1.0 / (1 << 24))


def key_to_randint(k: torch.Tensor, high: int) -> torch.Tensor:
    """Keys to integers in [0, high), as :func:`randint` maps them (``high`` a Python int)."""
    return (k * high) >> 32


def uniform(seed: int, epoch: int, index: torch.Tensor, slot: int) -> torch.Tensor:
    """Uniform float32 numbers in [0, 1), one per element of ``index``, on ``index``'s device."""
    # 24 high bits are exactly representable in float32, so the result is identical on every device.
    return (key(seed, epoch, index, slot) >> 8).to(torch.float32) * (1.0 / (1 << 24))


def randint(seed: int, epoch: int, index: torch.Tensor, slot: int, high: int | torch.Tensor) -> torch.Tensor:
    """Integers in [0, high), one per element of ``index`` (int64). ``high`` may be a per-element tensor."""
    k = key(seed, epoch, index, slot)
    if isinstance(high, torch.Tensor):
        high = high.to(device=k.device, dtype=torch.int64)
    # Multiply-shift maps 32-bit keys to [0, high) without the modulo bias of small ranges.
    return (k * high) >> 32


def stream_seed(seed: int, stream: str, epoch: int = 0, rank: int = 0) -> int:
    """The seed of a named stream of torch's *global* RNG, a pure function of (seed, stream, epoch, rank).

    Code that cannot take a generator (weight initialization, dropout, Shake-Shake) draws from torch's global
    RNG. augkd reseeds that RNG from this function right before each such consumer, so what ran before it (data
    decoding, evaluation, a teacher, logging) can never change a run's numbers.

    ``init`` (the model's initial weights) is the run seed itself, as in every augkd run so far; other streams
    are keyed hashes (``epoch_seed`` is the stream of one epoch's training steps on one rank).
    """
    if stream not in SLOTS:
        raise ValueError(f"unknown random stream {stream!r}; known: {sorted(SLOTS)}")
    if stream == "init":
        return int(seed)
    index = torch.tensor([rank], dtype=torch.int64)
    return int(key(seed, epoch, index, slot=SLOTS[stream]).item())


def seed_global_stream(seed: int, stream: str, epoch: int = 0, rank: int = 0) -> None:
    """Reseed torch's global RNG (every device) for the named stream: see :func:`stream_seed`."""
    torch.manual_seed(stream_seed(seed, stream, epoch, rank))
