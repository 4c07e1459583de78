"""Training checkpoints: everything needed to continue a run exactly where it stopped.

    <output_dir>/checkpoints/step-00000040/
        trainable.safetensors   adapter + head parameters (only what trains; the frozen base is never dumped)
        best.safetensors        trainable weights of the best evaluation so far (when there was one)
        optimizer.safetensors   tensors of the optimizer, scheduler and grad-scaler states
        sharded/                under FSDP, instead of trainable/best and the optimizer's tensors: one safetensors
                                file per process, a torch distributed checkpoint (fsdp.py)
        rng-<rank>.safetensors  torch (and cuda) RNG states of each process; python/numpy states go in rng-<rank>.json
        state.json              step, data position of every task stream, task sampler state, best metric, counters,
                                and the non-tensor parts of the above

We do not use `Accelerator.save_state`: it writes the whole model (the frozen int8 base on every save) and pickles
the optimizer. Here every tensor goes through safetensors and everything else is JSON, so loading never unpickles.
A checkpoint is written into a temporary folder and renamed into place: a kill during a save leaves the previous
checkpoints untouched, and a half-written folder is never mistaken for a checkpoint.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import RunDirError
from ..files import read_json
from ..runs.rundir import finished as run_finished
from . import fsdp

DIRNAME = "checkpoints"
STEP_RE = re.compile(r"^step-(\d+)$")
# Test hook (tests/training/test_resume.py, test_faults.py): "STEP:SECONDS" sleeps inside the checkpoint save of that
# step, before the rename; "final:SECONDS" after the final weights are written, before the run is marked finished.
SLEEP_ENV = "ADAPTERKIT_TEST_SLEEP_IN_SAVE"


@dataclass
class Position:
    """Loop counters saved with each checkpoint. Data positions live in each task's `Stream`."""

    step: int = 0
    seen: int = 0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    windows: dict = field(default_factory=dict)  # task -> [loss sum, forward passes] since the last log line
    batches: dict = field(default_factory=dict)  # task -> forward passes it has trained
    elapsed_s: float = 0.0
    eval_s: float = 0.0
    best_collapsed: bool = False  # the best evaluation had collapse findings (a recovery goes to the start instead)
    recoveries: list = field(default_factory=list)  # training.on_collapse: recover, one record per recovery


# ---- tensors + JSON instead of pickle -------------------------------------------------------------------------


def _encode(obj, tensors: dict, key: str):
    """A JSON tree for `obj` with every tensor moved into `tensors` (saved with safetensors)."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, dict):  # keys may be ints (optimizer state): keep them as pairs
        return {"__dict__": [[k, _encode(v, tensors, f"{key}.{k}")] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{key}.{i}") for i, v in enumerate(obj)]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {key} in a checkpoint")


def _decode(tree, tensors: dict):
    if isinstance(tree, list):
        return [_decode(v, tensors) for v in tree]
    if isinstance(tree, dict):
        if "__tensor__" in tree:
            return tensors[tree["__tensor__"]]
        if "__ndarray__" in tree:
            return np.array(tree["__ndarray__"], dtype=tree["dtype"])
        if "__dict__" in tree:
            return {k: _decode(v, tensors) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(_decode(v, tensors) for v in tree["__tuple__"])
    return tree


def _save_tensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    _fsync(path)


def _load_tensors(path: Path, what: str) -> dict:
    from safetensors.torch import load_file

    if not path.is_file():
        raise RunDirError(f"{path}: {what} missing from the checkpoint")
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error types for truncated or corrupted files
        raise RunDirError(f"{path}: {what} is corrupted or truncated ({str(e).splitlines()[0][:120]})") from None


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))
    _fsync(path)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---- RNG states ---------------------------------------------------------------------------------------------------


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- finding checkpoints ----------------------------------------------------------------------------------------


def checkpoints_dir(run_dir) -> Path:
    return Path(run_dir) / DIRNAME


def list_checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def verify(ckpt: Path) -> dict:
    """Read a checkpoint's state and check that every file in it loads. Returns the state."""
    state = read_json(ckpt / "state.json", "checkpoint state")
    for name in ["trainable.safetensors", "optimizer.safetensors"] + (
        ["best.safetensors"] if state.get("has_best") else []
    ):
        if state.get("sharded") and name != "optimizer.safetensors":
            continue  # FSDP: the weights are in the shards
        _load_tensors(ckpt / name, name)
    if state.get("sharded"):
        fsdp.verify(ckpt, state.get("processes", 1))
    return state


def resolve_resume(run_dir, resume: str | None) -> Path | None:
    """The checkpoint to resume from: `latest` (or None -> no resume), a checkpoint folder, or a run folder."""
    if resume is None:
        return None
    where = Path(run_dir) if resume == "latest" else Path(resume)
    if STEP_RE.match(where.name) and where.is_dir():
        verify(where)
        return where
    if not where.is_dir():
        raise RunDirError(f"--resume: {where} is not a folder (give a run folder or a checkpoints/step-N folder)")
    found = list_checkpoints(where)
    if not found:
        raise RunDirError(
            f"--resume: no checkpoint in {checkpoints_dir(where)} (set training.checkpoint_every to write them)"
        )
    verify(found[-1])
    return found[-1]


def check_output_dir(t, resume: str | None, run_dir=None) -> Path | None:
    """Before loading a model: refuse to start over a finished run or over an interrupted run's checkpoints
    unless asked, and find the checkpoint to resume from (`t`: the training section). Returns that checkpoint or None."""
    run_dir = Path(run_dir or t.output_dir)
    status = run_dir / "run.json"
    finished = run_finished(status)
    if resume is not None:
        if finished and resume == "latest":
            raise RunDirError(f"--resume: {run_dir} holds a finished run; there is nothing to resume")
        return resolve_resume(run_dir, resume)
    if list_checkpoints(run_dir) and not finished and not t.overwrite:
        raise RunDirError(
            f"training.output_dir: {run_dir} holds checkpoints of an unfinished run; "
            f"continue it with --resume or start over with training.overwrite=true"
        )
    return None


# ---- what a resume must not change -----------------------------------------------------------------------------

# Keys a resume may change: where the run writes, how often it logs, saves or evaluates, and the test split; not
# what a training step computes (a changed batch size or learning rate would be ignored by the restored state).
RESUME_MAY_CHANGE = (
    "training.output_dir",
    "training.overwrite",
    "training.checkpoint_every",
    "training.keep_checkpoints",
    "training.log_every",
    "training.trackers",
    "training.eval_batch_size",
    "training.eval_every",
    "data.test",
    "data.max_test_samples",
    "training.on_collapse",
    "training.collapse_retries",  # what a collapse does, as on_collapse: a resume after a failed recovery may ask more
    "training.collapse_lr_factor",
)


def settings(recipe) -> dict:
    """The resolved recipe as flat `section.key` values, without the keys a resume may change."""
    flat: dict = {}

    def walk(prefix: str, value):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", recipe.model_dump(mode="json"))
    return {k: v for k, v in flat.items() if not k.startswith(RESUME_MAY_CHANGE)}


def changed_settings(saved: dict, now: dict) -> list[str]:
    return [
        f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)
    ]


# ---- saving and loading -----------------------------------------------------------------------------------------


def trainable_state(model, keys: set[str] | None = None) -> dict[str, torch.Tensor]:
    """The trained parameters: those named in `keys` (fixed when training starts: a multi-task run with per-task
    adapters switches requires_grad between adapters as it goes), else those that require grad now."""
    return {k: p.detach() for k, p in model.named_parameters() if (k in keys if keys is not None else p.requires_grad)}


class Stream:
    """One task's training batches, epoch after epoch, with its position: the epoch, the batches of it already
    drawn, and the shuffling generator's state when the epoch began. Enough to draw exactly the same batches
    again after a resume: the consumed ones are drawn and dropped (instead of accelerate's skip_first_batches),
    so the sampler and the RNGs are consumed exactly as in the uninterrupted run."""

    def __init__(self, loader):
        self.loader = loader
        self.gen = sampler_generator(loader)
        self.epoch = 0
        self.batch = 0  # batches of `epoch` already drawn
        self.epoch_gen_state = self.gen.get_state() if self.gen is not None else None
        self._it = None

    def __len__(self) -> int:
        return len(self.loader)

    def _start(self, restore: bool = False) -> None:
        if self.gen is not None:
            if restore:
                self.gen.set_state(self.epoch_gen_state)
            else:
                self.epoch_gen_state = self.gen.get_state()
        if hasattr(self.loader, "iteration"):
            self.loader.iteration = self.epoch
        self._it = iter(self.loader)

    def next(self):
        """The next training batch; a new epoch starts when this one is used up."""
        if self._it is None:
            self._start()
        try:
            batch = next(self._it)
        except StopIteration:
            self.epoch, self.batch = self.epoch + 1, 0
            self._start()
            batch = next(self._it)
        self.batch += 1
        return batch

    def state(self) -> tuple[dict, object]:
        """(position, generator state) to save. A finished epoch resumes at the start of the next one."""
        if self.batch >= len(self.loader):
            return {"epoch": self.epoch + 1, "batch": 0}, self.gen.get_state() if self.gen is not None else None
        return {"epoch": self.epoch, "batch": self.batch}, self.epoch_gen_state

    def restore(self, position: dict, gen_state) -> None:
        """Go back to a saved position: the epoch's shuffle is drawn again and its consumed batches are dropped. A
        stream at the start of an epoch starts lazily, at the same moment as in the uninterrupted run."""
        self.epoch, self.batch = position["epoch"], 0
        if gen_state is not None:
            self.epoch_gen_state = gen_state
        if self.gen is not None:
            self.gen.set_state(self.epoch_gen_state)
        self._it = None
        if position["batch"]:
            self._start(restore=True)
            for _ in range(position["batch"]):
                next(self._it)
            self.batch = position["batch"]


class Checkpointer:
    """Saves and restores the training state of one run. All processes call save(); the main one writes the shared
    files, each writes its own RNG state."""

    def __init__(
        self,
        run_dir,
        accelerator,
        model,
        optimizer,
        scheduler,
        streams: dict[str, Stream],
        sampler=None,
        keep: int = 2,
        keys: set[str] | None = None,
        settings: dict | None = None,
        batch_size: int | None = None,
    ):
        self.root = checkpoints_dir(run_dir)
        self.batch_size = batch_size  # per process, as this launch trains (elastic_batch_size)
        self.keys = keys
        self.settings = settings
        self.acc, self.model, self.optimizer, self.scheduler = accelerator, model, optimizer, scheduler
        self.streams, self.sampler = streams, sampler
        self.keep = keep

    # -- save --
    def save(self, pos: Position, best_state: dict | None) -> Path | None:
        acc = self.acc
        final = self.root / f"step-{pos.step:08d}"
        tmp = self.root / f".tmp-step-{pos.step:08d}"
        if acc.is_main_process:
            for stale in self.root.glob(".tmp-step-*"):
                shutil.rmtree(stale, ignore_errors=True)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        if not tmp.is_dir():  # the main process made it: this machine does not see the same folder
            raise RunDirError(
                f"training.output_dir: {self.root.parent} is not shared with process {acc.process_index} (its "
                f"machine does not see the checkpoint the main process writes); put it on a filesystem every "
                f"machine mounts"
            )
        rng_tensors: dict = {}
        rng_tree = _encode(rng_state(), rng_tensors, "rng")
        _save_tensors(rng_tensors, tmp / f"rng-{acc.process_index}.safetensors")
        _write_json(tmp / f"rng-{acc.process_index}.json", rng_tree)
        acc.wait_for_everyone()
        sharded = None
        if fsdp.active(acc):  # every process writes its shards of the weights and optimizer state
            sharded = fsdp.save(tmp, self.model, self.optimizer, self.keys, best_state)
        if acc.is_main_process:
            unwrapped = acc.unwrap_model(self.model)
            if sharded is None:  # FSDP: the shards hold the weights
                _save_tensors(
                    {k: v.cpu().clone().contiguous() for k, v in trainable_state(unwrapped, self.keys).items()},
                    tmp / "trainable.safetensors",
                )
            if best_state is not None and sharded is None:
                _save_tensors(
                    {k: v.cpu().clone().contiguous() for k, v in best_state.items()}, tmp / "best.safetensors"
                )
            tensors: dict = {}
            trees = {
                "optimizer": _encode(sharded or self.optimizer.state_dict(), tensors, "optimizer"),
                "scheduler": _encode(self.scheduler.state_dict(), tensors, "scheduler"),
            }
            if acc.scaler is not None:
                trees["scaler"] = _encode(acc.scaler.state_dict(), tensors, "scaler")
            streams, gens = {}, {}
            for name, stream in self.streams.items():
                streams[name], gen_state = stream.state()
                if gen_state is not None:
                    gens[name] = gen_state
            trees["sampler_generators"] = _encode(gens, tensors, "sampler_generators")
            if self.sampler is not None:
                trees["task_sampler"] = _encode(self.sampler.state(), tensors, "task_sampler")
            _save_tensors(tensors, tmp / "optimizer.safetensors")
            pause_for_tests(pos.step)
            _write_json(
                tmp / "state.json",
                dict(
                    position=asdict(pos),
                    streams=streams,
                    has_best=best_state is not None,
                    sharded=sharded is not None,
                    processes=acc.num_processes,
                    batch_size=self.batch_size,
                    saved=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    settings=self.settings,
                    **trees,
                ),
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            _fsync(self.root)
            self._rotate(pos.best_step)
        acc.wait_for_everyone()
        return final

    def _rotate(self, best_step: int | None) -> None:
        """Keep the last `keep` checkpoints and the one written at the best evaluation (when there is one)."""
        found = list_checkpoints(self.root.parent)
        keep = set(found[-self.keep :])
        keep.update(p for p in found if best_step is not None and p.name == f"step-{best_step:08d}")
        for p in found:
            if p not in keep:
                shutil.rmtree(p, ignore_errors=True)

    # -- load --
    def load(self, ckpt: Path) -> tuple[Position, dict | None]:
        """Restore weights, optimizer, scheduler, scaler, every task stream's data position and the task sampler;
        then the RNG states of this process, last, so that re-drawing the consumed batches does not move them.
        Returns (position, best_state)."""
        acc = self.acc
        state = verify(ckpt)
        changed = (
            changed_settings(state["settings"], self.settings)
            if state.get("settings") is not None and self.settings is not None
            else []
        )
        if changed:
            raise RunDirError(
                f"--resume: the recipe changed since {ckpt} was written ({'; '.join(changed[:3])}); resume with "
                f"the recipe that wrote it, or start over with training.overwrite=true"
            )
        if sorted(state.get("streams", {})) != sorted(self.streams):
            raise RunDirError(
                f"--resume: {ckpt} holds the tasks {sorted(state.get('streams', {}))}, this recipe trains "
                f"{sorted(self.streams)}; resume with the recipe that wrote it"
            )
        tensors = _load_tensors(ckpt / "optimizer.safetensors", "optimizer.safetensors")
        if state.get("sharded") or fsdp.active(acc):
            best_state = self._load_sharded(ckpt, state, tensors)
        else:
            best_state = self._load_weights(ckpt, state, tensors)
        self.scheduler.load_state_dict(
            rescaled_schedule(_decode(state["scheduler"], tensors), state.get("processes", 1), acc.num_processes)
        )
        if acc.scaler is not None and "scaler" in state:
            acc.scaler.load_state_dict(_decode(state["scaler"], tensors))
        gens = _decode(state.get("sampler_generators", {"__dict__": []}), tensors)
        for name, stream in self.streams.items():
            stream.restore(state["streams"][name], gens.get(name))
        if self.sampler is not None and "task_sampler" in state:
            self.sampler.set_state(_decode(state["task_sampler"], tensors))
        # A process the writing launch did not have (elastic resume to more processes) takes the main one's state:
        # every process starts from the same seed, and without dropout they draw alike.
        rank = acc.process_index if acc.process_index < state.get("processes", 1) else 0
        set_rng_state(
            _decode(
                read_json(ckpt / f"rng-{rank}.json", "checkpoint RNG state"),
                _load_tensors(ckpt / f"rng-{rank}.safetensors", f"rng-{rank}.safetensors"),
            )
        )
        return Position(**state["position"]), best_state

    def _load_sharded(self, ckpt: Path, state: dict, tensors: dict) -> dict | None:
        """FSDP: every process reads its shards of the weights and optimizer state (fsdp.py). Returns the best
        weights (sharded) or None."""
        if not state.get("sharded") or not fsdp.active(self.acc):
            raise RunDirError(
                f"--resume: {ckpt} was written {'with' if state.get('sharded') else 'without'} FSDP; resume it "
                f"with the Accelerate config that wrote it"
            )
        check_fits(ckpt, *fsdp.shapes(ckpt, self.model, self.keys))
        return fsdp.load(
            ckpt,
            self.model,
            self.optimizer,
            self.keys,
            _decode(state["optimizer"], tensors),
            bool(state.get("has_best")),
        )

    def _load_weights(self, ckpt: Path, state: dict, tensors: dict) -> dict | None:
        """The trained weights and optimizer state of an unsharded checkpoint. Returns the best weights or None."""
        unwrapped = self.acc.unwrap_model(self.model)
        weights = _load_tensors(ckpt / "trainable.safetensors", "trainable.safetensors")
        expected = {k: tuple(p.shape) for k, p in trainable_state(unwrapped, self.keys).items()}
        check_fits(ckpt, expected, {k: tuple(v.shape) for k, v in weights.items()})
        unwrapped.load_state_dict(weights, strict=False)
        self.optimizer.load_state_dict(_decode(state["optimizer"], tensors))
        return _load_tensors(ckpt / "best.safetensors", "best.safetensors") if state.get("has_best") else None

    def clear(self) -> None:
        """A fresh start (training.overwrite): old checkpoints must not be mistaken for this run's."""
        if self.acc.is_main_process:
            shutil.rmtree(self.root, ignore_errors=True)
        self.acc.wait_for_everyone()


def check_fits(ckpt: Path, expected: dict, got: dict) -> None:
    """The checkpoint holds this model's trained parameters, with their shapes (name -> shape on both sides)."""
    if got != expected:
        diff = sorted(set(got) ^ set(expected)) or [k for k in expected if expected[k] != got[k]]
        raise RunDirError(
            f"--resume: {ckpt} does not fit this recipe's model (parameters differ: {diff[:3]}); "
            f"resume with the recipe that wrote it"
        )


def elastic_batch_size(ckpt: Path | None, batch_size: int, processes: int, tasks: int) -> int:
    """The per-process batch for this launch. A checkpoint written by another number of processes resumes with its
    global batch (elastic resume): each process takes global / processes examples, so the global batches, the data
    order by global sample index and the schedule are those of the run that wrote it."""
    if ckpt is None:
        return batch_size
    state = read_json(ckpt / "state.json", "checkpoint state")
    saved = int(state.get("processes", 1))
    if saved == processes:
        return int(state.get("batch_size") or batch_size)
    if tasks > 1:
        raise RunDirError(
            f"--resume: {ckpt} was written by {saved} process(es), this launch has {processes}; a multi-task run "
            f"resumes with the same number of processes"
        )
    total = int(state.get("batch_size") or batch_size) * saved
    if total % processes:
        raise RunDirError(
            f"--resume: {ckpt} was written by {saved} process(es) with a global batch of {total}, which "
            f"{processes} processes cannot share evenly; resume with a number of processes that divides {total}"
        )
    return total // processes


def rescaled_schedule(state: dict, saved: int, processes: int) -> dict:
    """A scheduler state written by `saved` processes, for `processes`: Accelerate steps the schedule once per process
    per optimizer step, so its counters are in those units (loop._optimization)."""
    if saved == processes or "last_epoch" not in state:
        return state
    steps = state["last_epoch"] // saved
    return {**state, "last_epoch": steps * processes, "_step_count": steps * processes + 1}


def sampler_generator(dataloader) -> torch.Generator | None:
    """The generator that shuffles the training data (accelerate keeps the sampler's generator when it prepares;
    a prepared loader nests the original batch sampler, one level deeper per process shard)."""
    node = getattr(dataloader, "batch_sampler", None)
    while node is not None:
        gen = getattr(getattr(node, "sampler", None), "generator", None)
        if isinstance(gen, torch.Generator):
            return gen
        node = getattr(node, "batch_sampler", None)
    return getattr(dataloader, "generator", None)


def pause_for_tests(point) -> None:
    spec = os.environ.get(SLEEP_ENV)
    if spec:
        at, seconds = spec.split(":")
        if at == str(point):
            time.sleep(float(seconds))
