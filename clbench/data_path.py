"""The two data paths a strategy runs on: Avalanche's loaders, or the device path.

Both implement one interface, :class:`ExampleFetch` (``fetch_examples``: a strategy's or a
plugin's way to read memory examples), as mixins placed in front of the strategy's
template by :func:`with_data_path`; the runner applies it to every strategy
(:func:`clbench.training.context.build_strategy`), so no factory can forget it.

The device path keeps images resident on the training device as uint8, augmented in batch.

Avalanche's data loaders fetch examples one by one through nested dataset wrappers and
apply per-example transforms; on a GPU that Python work, not arithmetic, bounds a step.
This module keeps the *sampling* of whatever loader a strategy or plugin built (plain,
task-balanced, replay: which datasets, how many examples of each per step, shuffling,
cycling of the smaller ones) and replaces only the *fetching*: every Avalanche dataset is
resolved once to row numbers of the benchmark's in-memory split, the split lives on the
device as uint8, and a whole mini-batch is gathered, cropped, flipped and normalised in a
few tensor operations.

:class:`DevicePathMixin` puts this inside Avalanche's template: it converts the train
loader at the start of every epoch and builds the eval loader itself, so every hook and
plugin keeps working.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from clbench.datasets.base import ImageArrayDataset

if TYPE_CHECKING:
    from clbench.config import TrainingConfig
from clbench.errors import DataError

Precision = Literal["fp32", "bf16"]
CROP_PADDING = 4


def crop_flip(
    pixels: torch.Tensor,
    offsets: torch.Tensor,
    flips: torch.Tensor,
    padding: int,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """Random-crop-with-padding and horizontal flip of a whole batch, with given draws.

    Args:
        pixels: ``uint8`` (N, C, H, W), or normalised inputs with ``fill``.
        offsets: (N, 2) integer (row, column) offsets into the zero-padded image, in
            ``[0, 2 * padding]``.
        flips: (N,) booleans: flip this image left-right.
        padding: Padding on every side before cropping: zero (black), or ``fill``.
        fill: (1, C, 1, 1) per-channel padding value: black in normalised units for
            inputs already normalised (a memory's stored examples).

    Returns:
        The augmented batch, same shape and dtype as ``pixels``.
    """
    n, c, h, w = pixels.shape
    if fill is None:
        padded = F.pad(pixels, (padding, padding, padding, padding))
    else:
        padded = fill.to(pixels.dtype).expand(n, c, h + 2 * padding, w + 2 * padding).clone()
        padded[:, :, padding : padding + h, padding : padding + w] = pixels
    rows = offsets[:, 0:1] + torch.arange(h, device=pixels.device)
    cols = offsets[:, 1:2] + torch.arange(w, device=pixels.device)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    picked_rows = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * padding))
    return picked_rows.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def random_crop_flip(
    pixels: torch.Tensor,
    generator: torch.Generator,
    padding: int = CROP_PADDING,
    fill: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`crop_flip` with offsets and flips drawn from ``generator`` (uniform, p = 0.5)."""
    n = pixels.shape[0]
    offsets = torch.randint(0, 2 * padding + 1, (n, 2), generator=generator, device=pixels.device)
    flips = torch.rand(n, generator=generator, device=pixels.device) < 0.5
    return crop_flip(pixels, offsets, flips, padding, fill)


class DeviceImages:
    """One in-memory split copied to a device as uint8, served as normalised float batches."""

    def __init__(self, source: ImageArrayDataset, device: torch.device, channels_last: bool) -> None:
        """Copy ``source``'s pixels to ``device``."""
        self.pixels = source.pixels.to(device)
        self.augment = source.augment
        self.channels_last = channels_last
        self.shift = torch.tensor(source.mean, device=device).view(1, -1, 1, 1)
        self.scale = torch.tensor(source.std, device=device).view(1, -1, 1, 1)

    def batch(self, rows: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        """Normalised float32 images of ``rows`` (training augmentation if asked and enabled)."""
        pixels = self.pixels[rows]
        if augment and self.augment:
            pixels = random_crop_flip(pixels, generator)
        return self._laid_out((pixels.float().div_(255.0) - self.shift).div_(self.scale))

    def augment_normalised(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The training augmentation of images already normalised (a memory's stored inputs), if enabled.

        Cropping and flipping commute with the per-pixel normalisation, and the padding is
        black in normalised units, so an image stored un-augmented and augmented here is
        the image :meth:`batch` would have served with the same draws, bit for bit.
        """
        if not self.augment:
            return images
        black = (torch.zeros_like(self.shift) - self.shift).div_(self.scale)
        return self._laid_out(random_crop_flip(images, generator, fill=black))

    def _laid_out(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


class DeviceTensors:
    """Examples stored as ready input tensors (e.g. GSS's memory), stacked once on a device.

    They are served as stored, without augmentation, exactly as the Avalanche path serves
    such a dataset (it has no transforms).
    """

    def __init__(self, examples: Sequence[Any], device: torch.device, channels_last: bool) -> None:
        """Stack the inputs of ``examples`` (``(x, y, ...)`` tuples) on ``device``."""
        self.inputs = torch.stack([torch.as_tensor(example[0]) for example in examples]).to(device)
        self.channels_last = channels_last

    def batch(self, rows: torch.Tensor, augment: bool, generator: torch.Generator) -> torch.Tensor:
        """The stored inputs of ``rows``; ``augment`` and ``generator`` are ignored."""
        images = self.inputs[rows]
        if self.channels_last and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return images


Storage = ImageArrayDataset | list[Any]
"""What a dataset resolves to: an in-memory split, or a list of ready ``(x, y)`` examples."""


class IndexedSubset(torch.utils.data.Dataset[tuple[Any, ...]]):
    """A subset whose items also carry their index in the parent dataset, as a last element."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        """Select ``indices`` of ``dataset``."""
        self.dataset = dataset
        self.indices = list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[Any, ...]:
        index = self.indices[position]
        x, y, task, *_ = self.dataset[index]
        return x, y, task, index


def resolve_rows(dataset: Any) -> tuple[Storage, npt.NDArray[np.int64]]:
    """The storage behind an Avalanche (or torch) dataset, and the row of each item.

    Walks Avalanche's flat-data wrappers (concatenations, subsets, transform groups) and
    torch ``Subset``-like objects down to an :class:`ImageArrayDataset` or a plain list of
    ready examples.

    Raises:
        DataError: The dataset is not built from one in-memory split.
    """
    return _resolve(dataset, np.arange(len(dataset), dtype=np.int64))


def _resolve(node: Any, positions: npt.NDArray[np.int64]) -> tuple[Storage, npt.NDArray[np.int64]]:
    if isinstance(node, (ImageArrayDataset, list)):
        return node, positions
    flat = getattr(node, "_flat_data", None)
    if flat is not None and flat is not node:
        return _resolve(flat, positions)
    if isinstance(node, (IndexedSubset, torch.utils.data.Subset)):
        return _resolve(node.dataset, np.asarray(node.indices, dtype=np.int64)[positions])
    parts = getattr(node, "_datasets", None)
    if parts is None:
        raise DataError(
            f"device data path: cannot see the images behind a {type(node).__name__}; "
            "valid choices: training.data_path=avalanche, or datasets built from a clbench benchmark"
        )
    indices = getattr(node, "_indices", None)
    if indices is not None:
        positions = np.fromiter(indices, dtype=np.int64, count=len(indices))[positions]
    ends = np.cumsum([len(part) for part in parts])
    owner = np.searchsorted(ends, positions, side="right")
    rows = np.empty_like(positions)
    base: Storage | None = None
    for part_id in np.unique(owner):
        mask = owner == part_id
        start = 0 if part_id == 0 else int(ends[part_id - 1])
        part_base, part_rows = _resolve(parts[part_id], positions[mask] - start)
        if base is not None and part_base is not base:
            raise DataError("device data path: one data loader mixes images of two different splits")
        base, rows[mask] = part_base, part_rows
    if base is None:  # an empty dataset: any split will do, no rows are read
        raise DataError("device data path: cannot resolve an empty dataset")
    return base, rows


@dataclass
class _Source:
    """One dataset of a loader, resolved: device rows, labels, task labels, own indices."""

    images: DeviceImages | DeviceTensors
    rows: torch.Tensor
    targets: torch.Tensor
    task_labels: torch.Tensor
    batch_size: int
    carried_index: torch.Tensor | None

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def _labels(dataset: Any, name: str, device: torch.device, default: int | None) -> torch.Tensor:
    values = getattr(dataset, name, None)
    if values is None:
        if default is None:
            raise DataError(f"device data path: dataset {type(dataset).__name__} has no {name}")
        return torch.full((len(dataset),), default, dtype=torch.long, device=device)
    return torch.as_tensor(np.asarray(list(values), dtype=np.int64), device=device)


class DeviceBatches:
    """Mini-batches concatenated from several resolved datasets, sampled like Avalanche's loaders.

    Each epoch lasts as many steps as the termination source has batches; every other source
    is reshuffled and cycled when exhausted (``oversample``) or stops contributing.
    """

    def __init__(
        self,
        sources: list[_Source],
        termination: int,
        shuffle: bool,
        drop_last: bool,
        oversample: bool,
        augment: bool,
        generator: torch.Generator,
    ) -> None:
        """Sample from ``sources``; ``termination`` indexes the one that sets the epoch length."""
        self.sources = sources
        self.termination = termination
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.oversample = oversample
        self.augment = augment
        self.generator = generator
        self.last_parts: list[tuple[_Source, torch.Tensor]] = []

    def _batches_of(self, source: _Source) -> int:
        full, rest = divmod(len(source), source.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def __len__(self) -> int:
        return self._batches_of(self.sources[self.termination])

    def _order(self, source: _Source) -> torch.Tensor:
        n = len(source)
        device = source.rows.device
        if self.shuffle:
            return torch.randperm(n, generator=self.generator, device=device)
        return torch.arange(n, device=device)

    def _stream(self, source: _Source) -> Iterator[torch.Tensor]:
        """Positions of successive batches of one source (one pass)."""
        order = self._order(source)
        for b in range(self._batches_of(source)):
            yield order[b * source.batch_size : (b + 1) * source.batch_size]

    def __iter__(self) -> Iterator[list[torch.Tensor]]:
        streams: list[Iterator[torch.Tensor] | None] = [
            self._stream(s) if len(s) > 0 and s.batch_size > 0 else None for s in self.sources
        ]
        for _ in range(len(self)):
            parts: list[tuple[_Source, torch.Tensor]] = []
            for k, source in enumerate(self.sources):
                stream = streams[k]
                if stream is None:
                    continue
                chosen = next(stream, None)
                if chosen is None and k != self.termination and self.oversample:
                    streams[k] = stream = self._stream(source)
                    chosen = next(stream, None)
                if chosen is None:
                    streams[k] = None
                    continue
                parts.append((source, chosen))
            yield self._assemble(parts)

    def _augments(self, images: DeviceImages | DeviceTensors) -> bool:
        return self.augment and isinstance(images, DeviceImages) and images.augment

    def unaugmented(self, count: int) -> torch.Tensor | None:
        """The first ``count`` inputs of the last batch without augmentation; None if it was not augmented."""
        if not any(self._augments(s.images) for s, _ in self.last_parts):
            return None
        images = torch.cat([s.images.batch(s.rows[p], False, self.generator) for s, p in self.last_parts])
        return images[:count]

    def augmenting_images(self) -> DeviceImages | None:
        """The images of the last batch's first source if this loader augments them, else None."""
        images = self.last_parts[0][0].images if self.last_parts else None
        return images if isinstance(images, DeviceImages) and self._augments(images) else None

    def _assemble(self, parts: list[tuple[_Source, torch.Tensor]]) -> list[torch.Tensor]:
        self.last_parts = parts
        images = torch.cat([s.images.batch(s.rows[p], self.augment, self.generator) for s, p in parts])
        batch = [
            images,
            torch.cat([s.targets[p] for s, p in parts]),
            torch.cat([s.task_labels[p] for s, p in parts]),
        ]
        if all(s.carried_index is not None for s, _ in parts):
            batch.append(torch.cat([s.carried_index[p] for s, p in parts if s.carried_index is not None]))
        return batch


@dataclass(frozen=True)
class DevicePathOptions:
    """Settings of the device path (from the run's training config)."""

    channels_last: bool = False
    precision: Precision = "fp32"
    seed: int = 0


def device_path_options(training: TrainingConfig, seed: int) -> DevicePathOptions | None:
    """The device path's settings of a run, or None for Avalanche's loaders.

    ``training`` is resolved and checked already (:class:`clbench.config.TrainingConfig`):
    on the Avalanche path its fast settings are false / fp32.
    """
    if training.data_path == "avalanche":
        return None
    precision: Precision = "bf16" if training.precision == "bf16" else "fp32"
    return DevicePathOptions(channels_last=bool(training.channels_last), precision=precision, seed=seed)


@functools.cache  # /proc/cpuinfo once a process, not once a run of the grid
def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); None where it cannot be told.

    Without it, PyTorch emulates bf16 on the CPU: measured on a 2-core AMD EPYC with AVX2 only,
    a bf16 training iteration of the online protocol took 8-10x as long as an fp32 one.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    flags = set(text.split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def slow_precision_warning(precision: str | None, device: str) -> str | None:
    """A one-line warning when bf16 is asked for on a CPU that emulates it, else None."""
    if precision != "bf16" or device not in ("cpu", "auto") or torch.cuda.is_available():
        return None
    if cpu_has_native_bf16() is not False:
        return None
    return (
        "warning: training.precision=bf16 on a CPU without native bf16 (no avx512_bf16 / amx_bf16): "
        "bf16 is emulated and runs several times slower than fp32 here; consider --set training.precision=fp32"
    )


class _Splits:
    """Device copies of the in-memory splits, made once per split and device."""

    def __init__(self, device: torch.device, channels_last: bool) -> None:
        self.device = device
        self.channels_last = channels_last
        self._copies: dict[int, tuple[Storage, DeviceImages | DeviceTensors]] = {}

    def of(self, base: Storage) -> DeviceImages | DeviceTensors:
        if isinstance(base, list):  # small, changes between experiences: not cached
            return DeviceTensors(base, self.device, self.channels_last)
        key = id(base)
        if key not in self._copies:
            self._copies[key] = (base, DeviceImages(base, self.device, self.channels_last))
        return self._copies[key][1]


def _source(dataset: Any, batch_size: int, splits: _Splits) -> _Source:
    base, rows = resolve_rows(dataset)
    device = splits.device
    inner = dataset.dataset if isinstance(dataset, IndexedSubset) else dataset
    targets = _labels(inner, "targets", device, None)
    task_labels = _labels(inner, "targets_task_labels", device, 0)
    carried = None
    if isinstance(dataset, IndexedSubset):
        carried = torch.as_tensor(dataset.indices, dtype=torch.long, device=device)
        targets, task_labels = targets[carried], task_labels[carried]
    return _Source(
        images=splits.of(base),
        rows=torch.as_tensor(rows, device=device),
        targets=targets,
        task_labels=task_labels,
        batch_size=batch_size,
        carried_index=carried,
    )


def _one_dataset(
    source: _Source, shuffle: bool, drop_last: bool, augment: bool, generator: torch.Generator
) -> DeviceBatches:
    """Batches of a single dataset (a plain loader, or evaluation)."""
    return DeviceBatches(
        [source],
        termination=0,
        shuffle=shuffle,
        drop_last=drop_last,
        oversample=False,
        augment=augment,
        generator=generator,
    )


def convert_loader(loader: Any, splits: _Splits, augment: bool, generator: torch.Generator) -> DeviceBatches:
    """The device equivalent of an Avalanche multi-dataset loader or a torch ``DataLoader``.

    Raises:
        DataError: The loader is of a kind whose sampling this path does not reproduce.
    """
    from avalanche.benchmarks.utils.data_loader import MultiDatasetDataLoader

    if isinstance(loader, DeviceBatches):
        return loader
    if isinstance(loader, MultiDatasetDataLoader):
        if loader.never_ending:
            raise DataError("device data path: never-ending loaders are not supported; use data_path=avalanche")
        kwargs = loader.loader_kwargs
        return DeviceBatches(
            [_source(d, b, splits) for d, b in zip(loader.datasets, loader.batch_sizes, strict=True)],
            termination=int(loader.termination_dataset),
            shuffle=bool(kwargs.get("shuffle", False)),
            drop_last=bool(kwargs.get("drop_last", False)),
            oversample=bool(loader.oversample_small_datasets),
            augment=augment,
            generator=generator,
        )
    if isinstance(loader, torch.utils.data.DataLoader):
        batch_size = loader.batch_size
        if batch_size is None:
            raise DataError("device data path: a DataLoader without batch_size; use data_path=avalanche")
        return _one_dataset(
            _source(loader.dataset, batch_size, splits),
            shuffle=isinstance(loader.sampler, torch.utils.data.RandomSampler),
            drop_last=bool(loader.drop_last),
            augment=augment,
            generator=generator,
        )
    raise DataError(
        f"device data path: cannot convert a {type(loader).__name__}; valid choices: Avalanche loaders, "
        "torch DataLoader (or training.data_path=avalanche)"
    )


class RepeatedBatches:
    """Each mini-batch of ``loader`` ``times`` times in a row: ``times`` updates per incoming batch.

    The online literature's ``n_iters`` (MIR's reference code): every repetition is a whole
    step (hooks, replay draw, update) on the same stream batch. Before each copy the owner's
    ``batch_repetition`` is set (0 for the first), so a strategy that stores stream examples
    per step (GSS) stores each incoming batch once.
    """

    def __init__(self, loader: Any, times: int, owner: Any) -> None:
        self.loader, self.times, self.owner = loader, times, owner

    def __len__(self) -> int:
        return len(self.loader) * self.times

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            for repetition in range(self.times):
                self.owner.batch_repetition = repetition
                yield list(batch)  # a fresh list: a step may replace or extend its batch


class StreamUpdates:
    """What both data paths share: ``updates_per_batch`` steps on every incoming mini-batch."""

    updates_per_batch: int = 1
    batch_repetition: int = 0
    dataloader: Any

    @contextmanager
    def _each_batch_repeated(self) -> Iterator[None]:
        """Within: the train loader yields each batch ``updates_per_batch`` times (see :class:`RepeatedBatches`)."""
        if self.updates_per_batch == 1:
            yield
            return
        loader = self.dataloader
        self.dataloader = RepeatedBatches(loader, self.updates_per_batch, self)
        try:
            yield
        finally:
            self.dataloader, self.batch_repetition = loader, 0


class DevicePathMixin(StreamUpdates):
    """Template mixin: device-resident batches for training and evaluation, optional bf16.

    Mixed in front of any ``SupervisedTemplate`` subclass (see
    :func:`with_data_path`). Whatever train loader the template and its plugins built
    for an experience is converted, with the same sampling, when an epoch starts; the eval
    loader is built directly. ``forward`` runs under bf16 autocast when asked and returns
    float32 logits, so losses and metrics stay in full precision.
    """

    device_path: DevicePathOptions = DevicePathOptions()
    dataloader: Any
    adapted_dataset: Any
    eval_mb_size: int
    device: torch.device
    is_training: bool

    def _device_state(self) -> tuple[_Splits, torch.Generator]:
        state = getattr(self, "_device_path_state", None)
        if state is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(self.device_path.seed)
            state = (_Splits(self.device, self.device_path.channels_last), generator)
            self._device_path_state = state
        return state

    def training_epoch(self, **kwargs: Any) -> None:
        """Convert the experience's train loader (once), then run the template's epoch."""
        splits, generator = self._device_state()
        self.dataloader = self._train_batches = convert_loader(
            self.dataloader, splits, augment=True, generator=generator
        )
        with self._each_batch_repeated():
            super().training_epoch(**kwargs)  # type: ignore[misc]

    def make_eval_dataloader(self, **kwargs: Any) -> None:
        """Un-augmented device batches of the adapted eval dataset, in order."""
        splits, generator = self._device_state()
        source = _source(self.adapted_dataset, self.eval_mb_size, splits)
        self.dataloader = _one_dataset(source, shuffle=False, drop_last=False, augment=False, generator=generator)

    def fetch_examples(self, dataset: Any, indices: Sequence[int], augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of ``dataset[indices]`` in one batched gather on the device.

        Each dataset is resolved once (and kept alive, so its ``id`` stays its own).
        """
        splits, generator = self._device_state()
        cache: dict[int, tuple[Any, _Source]] = self.__dict__.setdefault("_device_fetch_cache", {})
        if id(dataset) not in cache:
            cache[id(dataset)] = (dataset, _source(dataset, 1, splits))
        source = cache[id(dataset)][1]
        positions = torch.as_tensor(list(indices), dtype=torch.long, device=source.rows.device)
        return source.images.batch(source.rows[positions], augment, generator), source.targets[positions]

    def unaugmented_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """See :class:`ExampleFetch`: the batch's rows gathered again without augmentation."""
        batches: DeviceBatches | None = getattr(self, "_train_batches", None)
        clean = batches.unaugmented(len(x)) if batches is not None else None
        return x if clean is None else clean

    def augment_like_training(self, x: torch.Tensor) -> torch.Tensor:
        """See :class:`ExampleFetch`: crop and flip drawn from the run's data generator."""
        batches: DeviceBatches | None = getattr(self, "_train_batches", None)
        images = batches.augmenting_images() if batches is not None else None
        return x if images is None else images.augment_normalised(x, self._device_state()[1])

    def forward(self) -> Any:
        """The template's forward, under bf16 autocast if configured."""
        with self._autocast():
            output = super().forward()  # type: ignore[misc]
        return output.float() if isinstance(output, torch.Tensor) else output

    def _autocast(self) -> AbstractContextManager[Any]:
        if self.device_path.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def strategy_autocast(strategy: Any) -> AbstractContextManager[Any]:
    """The autocast of ``strategy``'s own forward, for plugins that call its model themselves.

    bf16 on the device path when configured, nothing otherwise, so a plugin's extra forward
    passes (replayed or scored memory examples) run at the run's precision.
    """
    autocast = getattr(strategy, "_autocast", None)
    return autocast() if callable(autocast) else nullcontext()


@runtime_checkable
class ExampleFetch(Protocol):
    """What both data paths give a strategy: its way to read examples of any Avalanche dataset."""

    def fetch_examples(self, dataset: Any, indices: Sequence[int], augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and labels of ``dataset[indices]`` on the device (training augmentation if ``augment``)."""
        ...

    def unaugmented_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """The first ``len(x)`` inputs of the current training batch without training augmentation.

        ``x``: those inputs as the model received them (``mb_x`` or its stream part), returned
        as they are when the run's training data is not augmented. A memory that keeps the
        stream as it arrives stores these, so that replay augments every draw afresh
        (:meth:`augment_like_training`) instead of replaying one frozen crop forever.
        """
        ...

    def augment_like_training(self, x: torch.Tensor) -> torch.Tensor:
        """Stored un-augmented inputs with the stream's training augmentation, drawn afresh per example.

        ``x`` as it is when the run's training data is not augmented.
        """
        ...


def fetch_one_by_one(
    dataset: Any, indices: Sequence[int], augment: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of ``dataset[indices]``, fetched one example at a time through Avalanche."""
    view = dataset.train() if augment else dataset.eval()
    items = [view[int(i)] for i in indices]
    x = torch.stack([item[0] for item in items]).to(device)
    y = torch.as_tensor([int(item[1]) for item in items], device=device)
    return x, y


class AvalanchePathMixin(StreamUpdates):
    """Template mixin of Avalanche's data path: its loaders, fp32, examples fetched one at a time."""

    device: torch.device

    def training_epoch(self, **kwargs: Any) -> None:
        """The template's epoch, each batch taken ``updates_per_batch`` times."""
        with self._each_batch_repeated():
            super().training_epoch(**kwargs)  # type: ignore[misc]

    def fetch_examples(self, dataset: Any, indices: Sequence[int], augment: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``dataset[indices]`` through the dataset's own transforms (see :class:`ExampleFetch`)."""
        return fetch_one_by_one(dataset, indices, augment, self.device)

    def unaugmented_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """See :class:`ExampleFetch`; refused when the training data is augmented (see :meth:`_refuse_augmented`)."""
        self._refuse_augmented()
        return x

    def augment_like_training(self, x: torch.Tensor) -> torch.Tensor:
        """See :class:`ExampleFetch`; refused when the training data is augmented (see :meth:`_refuse_augmented`)."""
        self._refuse_augmented()
        return x

    def _refuse_augmented(self) -> None:
        """Avalanche's loaders augment each example inside the dataset: its un-augmented batch is gone.

        Raises:
            DataError: The current experience's training data is augmented.
        """
        experience: Any = getattr(self, "experience", None)
        cached = getattr(self, "_augmented_experience", (None, False))
        if cached[0] is not experience:
            try:
                base: Any = resolve_rows(experience.dataset)[0]
            except (AttributeError, DataError):  # not an in-memory split: nothing of ours augments it
                base = None
            cached = (experience, bool(getattr(base, "augment", False)))
            self._augmented_experience = cached
        if cached[1]:
            raise DataError(
                "a memory of the stream as it arrives, with augment: true, needs training.data_path=device "
                "(Avalanche's loaders keep no un-augmented batch); valid choices: data_path=device, augment: false"
            )


def with_data_path(template: type, options: DevicePathOptions | None, updates_per_batch: int = 1) -> type:
    """``template`` with its data path in front: the device path's mixin, or Avalanche's for None.

    ``updates_per_batch`` steps are taken on every incoming mini-batch (``training.iterations``,
    whose range :class:`clbench.config.TrainingConfig` checks). One template and one set of
    settings give one class (pickling, isinstance): the cache sits behind this function so
    that leaving ``updates_per_batch`` out and passing 1 are one key.
    """
    return _data_path_class(template, options, updates_per_batch)


@functools.cache
def _data_path_class(template: type, options: DevicePathOptions | None, updates_per_batch: int) -> type:
    settings: dict[str, Any] = {"updates_per_batch": updates_per_batch}
    if options is None:
        return type(f"Avalanche{template.__name__}", (AvalanchePathMixin, template), settings)
    return type(f"Device{template.__name__}", (DevicePathMixin, template), {**settings, "device_path": options})
