"""The YAHPO Gym LCBench surrogate, read with onnxruntime (no yahpo-gym, no numpy<2 pin).

LCBench (Zimmer et al. 2021) trained 2,000 MLP configurations for 52 epochs on each of 34 OpenML
tasks; YAHPO Gym 1.0.2 (Pfisterer et al. 2022) fitted one neural surrogate to all of the learning
curves and ships it as ``model.onnx``. This module feeds that model exactly what yahpo-gym's
``BenchmarkSet("lcbench").objective_function`` feeds it (checked by tests/bench/test_lcbench_loader.py
against a table of yahpo-gym's own outputs, and live against yahpo-gym where it is installed):

- ``x_cat`` (int32, n x 1): the task id through ``encoding.json``;
- ``x_cont`` (float32, n x 8): the raw values of ``epoch, batch_size, learning_rate, momentum,
  weight_decay, num_layers, max_units, max_dropout`` (the input and output transformations are
  inside the ONNX graph);
- output (float32, n x 6): ``time, val_accuracy, val_cross_entropy, val_balanced_accuracy,
  test_cross_entropy, test_balanced_accuracy``. ``time`` is the training time in seconds up to
  that epoch (cumulative); ``val_accuracy`` is in percent.

The surrogate is deterministic (the noisy variant is not shipped) and its curves are not always
monotone in ``epoch``; a benchmark that resumes a run from epoch a to b charges ``time(b) - time(a)``
(at least 0).

Run it as a script in the benchmark environment (bench/setup_env.sh) to print yahpo-gym's own
outputs for seeded random configurations, the table the loader test compares against:

    bench/.venv/bin/python bench/lcbench.py --reference 24
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
# ../shared/benchdata/yahpo/lcbench beside the checkout; LCBENCH_DATA_DIR points elsewhere.
DATA_DIR = Path(os.environ.get("LCBENCH_DATA_DIR") or REPO_ROOT.parent / "shared" / "benchdata" / "yahpo" / "lcbench")
SCENARIO = "lcbench"
TASK_PARAM = "OpenML_task_id"
FIDELITY = "epoch"
MAX_EPOCHS = 52
# The order of the model's continuous inputs (yahpo_gym/benchmarks/lcbench.py, cont_names).
CONT_NAMES = ("epoch", "batch_size", "learning_rate", "momentum", "weight_decay", "num_layers", "max_units",
              "max_dropout")
# The order of the model's outputs (yahpo_gym/benchmarks/lcbench.py, y_names).
Y_NAMES = ("time", "val_accuracy", "val_cross_entropy", "val_balanced_accuracy", "test_cross_entropy",
           "test_balanced_accuracy")
HYPERPARAMETERS = ("batch_size", "learning_rate", "max_dropout", "max_units", "momentum", "num_layers",
                   "weight_decay")


@dataclass(frozen=True)
class Param:
    """One tunable hyperparameter as config_space.json declares it."""

    name: str
    kind: str  # "int" | "float"
    low: float
    high: float
    log: bool

    def as_service(self) -> dict[str, Any]:
        """The hpo-service inline search-space entry."""
        if self.kind == "int":
            return {"type": "int", "low": int(self.low), "high": int(self.high), "log": self.log}
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}

    def sample(self, rng: random.Random) -> float | int:
        """Uniform (log-uniform when ``log``) in [low, high]; ints rounded on the same scale."""
        if self.log:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.kind == "int":
            return int(min(self.high, max(self.low, round(value))))
        return min(self.high, max(self.low, value))


def read_space(data_dir: Path = DATA_DIR) -> tuple[list[str], dict[str, Param]]:
    """(the 34 task ids in config_space.json's order, the 7 hyperparameters by name)."""
    raw = json.loads((data_dir / "config_space.json").read_text())
    tasks: list[str] = []
    params: dict[str, Param] = {}
    for hp in raw["hyperparameters"]:
        if hp["name"] == TASK_PARAM:
            tasks = [str(choice) for choice in hp["choices"]]
        elif hp["name"] in HYPERPARAMETERS:
            kind = "int" if hp["type"] == "uniform_int" else "float"
            params[hp["name"]] = Param(hp["name"], kind, hp["lower"], hp["upper"], bool(hp["log"]))
    missing = set(HYPERPARAMETERS) - set(params)
    if not tasks or missing:
        raise ValueError(f"{data_dir / 'config_space.json'}: no task ids or missing hyperparameters {missing}")
    return tasks, {name: params[name] for name in HYPERPARAMETERS}


class LCBench:
    """The surrogate of one data folder; one ONNX session, single-threaded by default.

    ``threads=1`` because benchmarks run one process per core; a batch of n rows costs about
    as much as a single row for small n, so callers batch where they can.
    """

    def __init__(self, data_dir: Path = DATA_DIR, threads: int = 1) -> None:
        import onnxruntime as ort

        self.data_dir = Path(data_dir)
        if not (self.data_dir / "model.onnx").is_file():
            raise FileNotFoundError(f"no LCBench surrogate at {self.data_dir / 'model.onnx'}")
        self.tasks, self.params = read_space(self.data_dir)
        encoding = json.loads((self.data_dir / "encoding.json").read_text())[TASK_PARAM]
        self._task_codes = {task: int(encoding[task]) for task in self.tasks}
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(self.data_dir / "model.onnx"), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self._session.get_inputs()]
        if inputs != ["x_cat", "x_cont"]:
            raise ValueError(f"unexpected model inputs {inputs}; expected x_cat, x_cont")

    def search_space(self) -> dict[str, dict[str, Any]]:
        """The 7 hyperparameters as an hpo-service inline search space (config_space.json's bounds)."""
        return {name: param.as_service() for name, param in self.params.items()}

    def predict(self, task: str, configs: Sequence[Mapping[str, Any]], epochs: Sequence[float]) -> np.ndarray:
        """Outputs (rows x ``Y_NAMES``, float64) of ``configs[i]`` trained ``epochs[i]`` epochs on ``task``."""
        if len(configs) != len(epochs):
            raise ValueError(f"{len(configs)} configurations but {len(epochs)} epochs")
        if not configs:
            return np.zeros((0, len(Y_NAMES)))
        code = self._task_codes.get(str(task))
        if code is None:
            raise KeyError(f"unknown LCBench task {task!r}; tasks are {', '.join(self.tasks)}")
        x_cat = np.full((len(configs), 1), code, dtype=np.int32)
        rows = [[float(epoch)] + [float(config[name]) for name in CONT_NAMES[1:]]
                for config, epoch in zip(configs, epochs)]
        x_cont = np.asarray(rows, dtype=np.float32)
        (out,) = self._session.run(None, {"x_cat": x_cat, "x_cont": x_cont})
        return np.asarray(out, dtype=np.float64)

    def evaluate(self, task: str, config: Mapping[str, Any], epoch: float) -> dict[str, float]:
        """One configuration at one epoch, as ``{y_name: value}``."""
        row = self.predict(task, [config], [epoch])[0]
        return dict(zip(Y_NAMES, (float(v) for v in row)))

    def curve(self, task: str, config: Mapping[str, Any], epochs: Sequence[int] | None = None) -> np.ndarray:
        """``predict`` for one configuration at several epochs (default 1..52), in one batch."""
        epochs = list(range(1, MAX_EPOCHS + 1)) if epochs is None else list(epochs)
        return self.predict(task, [config] * len(epochs), epochs)

    def sample(self, rng: random.Random) -> dict[str, float | int]:
        """A configuration drawn uniformly (log-uniformly where the space says log)."""
        return {name: param.sample(rng) for name, param in self.params.items()}


# --- reference outputs from yahpo-gym itself (benchmark environment only) -------------------------


def reference_rows(count: int, seed: int = 2024, data_dir: Path = DATA_DIR) -> list[dict[str, Any]]:
    """yahpo-gym 1.0.2's outputs for ``count`` seeded random (task, configuration, epoch) triples.

    Needs yahpo_gym (numpy<2, ConfigSpace<=0.6.1): run it in bench/.venv. yahpo-gym reads its data
    folder from a settings file; a temporary one is written so that nothing lands in ~/.config.
    """
    tasks, params = read_space(data_dir)
    rng = random.Random(seed)
    triples = []
    for i in range(count):
        config = {name: param.sample(rng) for name, param in params.items()}
        task = tasks[i % len(tasks)] if i < len(tasks) else rng.choice(tasks)
        epoch = rng.choice([1, 2, 6, 18, 52, rng.randint(1, MAX_EPOCHS)])
        triples.append((task, config, epoch))
    with tempfile.TemporaryDirectory() as tmp:
        settings = Path(tmp) / "yahpo_settings.yaml"
        settings.write_text(f"data_path: {data_dir.parent}\n")
        os.environ["YAHPO_LOCAL_CONFIG"] = str(settings)
        from yahpo_gym import BenchmarkSet, local_config

        local_config.settings_path = settings
        local_config._config = None
        bench = BenchmarkSet(SCENARIO, active_session=True, multithread=False, check=True)
        rows = []
        for task, config, epoch in triples:
            bench.set_instance(task)
            result = bench.objective_function({**config, FIDELITY: epoch, TASK_PARAM: task})[0]
            rows.append({"task": task, "epoch": epoch, "config": config,
                         "outputs": [float(result[name]) for name in Y_NAMES]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="LCBench surrogate: yahpo-gym's reference outputs, or a quick look")
    parser.add_argument("--reference", type=int, metavar="N", help="print yahpo-gym's outputs for N configurations "
                        "as JSON (needs yahpo_gym: bench/.venv)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    if args.reference:
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # yahpo-gym prints citations
            rows = reference_rows(args.reference, args.seed, args.data_dir)
        json.dump(rows, sys.stdout, indent=None, separators=(",", ":"))
        print()
        return 0
    bench = LCBench(args.data_dir)
    config = bench.sample(random.Random(args.seed))
    print(f"{len(bench.tasks)} tasks; a random configuration on task {bench.tasks[0]}: {config}")
    for epoch, row in zip((1, 2, 6, 18, 52), bench.curve(bench.tasks[0], config, [1, 2, 6, 18, 52])):
        print(f"  epoch {epoch:2d}: " + ", ".join(f"{name} {value:.4g}" for name, value in zip(Y_NAMES, row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
