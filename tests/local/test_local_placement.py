"""Where `recserve tiers up` puts the tiers: threads, CPU masks and polling derived from the cores."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config.schema import LocalTierConfig
from gateway.local.catalog import MODELS
from gateway.local.placement import Demand, Placement, available_cores, cpu_list, cpu_mask, plan
from gateway.local.server_build import ServerBinary
from gateway.local.supervisor import TierSpec, command_line, server_command, start_tier, stop, stop_recorded

SIZES = {spec.key: spec.size for spec in MODELS}
SHIPPED = [Demand("device", SIZES["smollm2-135m"]), Demand("edge", SIZES["qwen2.5-coder-0.5b"]),
           Demand("cloud", SIZES["qwen2.5-coder-1.5b"])]


def test_fewer_cores_than_tiers_one_thread_each_unpinned_without_polling() -> None:
    for cores in ([0], [0, 1]):
        assert plan(SHIPPED, cores) == [Placement(1, 1, None, poll=0)] * 3


@pytest.mark.parametrize(("cores", "threads"), [
    (3, [1, 1, 1]), (4, [1, 1, 2]), (8, [1, 3, 4]), (16, [2, 5, 9]), (64, [4, 19, 41]),
])
def test_enough_cores_disjoint_shares_by_model_size(cores: int, threads: list[int]) -> None:
    placements = plan(SHIPPED, range(cores))
    assert [p.threads for p in placements] == threads
    assert all(p.threads_batch == p.threads and p.poll is None for p in placements)
    pinned = [cpu for p in placements for cpu in (p.cpus or ())]
    assert sorted(pinned) == list(range(cores))  # every core used once
    assert all(p.cpus is not None and len(p.cpus) == p.threads for p in placements)


def test_cores_need_not_be_contiguous() -> None:
    # A container's cpuset: CPUs 2, 3, 6, 7 of a bigger host.
    placements = plan(SHIPPED, [7, 3, 6, 2])
    assert [p.cpus for p in placements] == [(2,), (3,), (6, 7)]
    assert cpu_mask((6, 7)) == "0xc0" and cpu_list((2, 3, 6, 7, 9)) == "2-3,6-7,9"


def test_threads_set_in_the_config_run_as_told() -> None:
    demands = [Demand("device", 1, threads=3), *SHIPPED[1:]]
    placements = plan(demands, range(4))
    assert placements[0] == Placement(3, 3)  # not pinned, llama.cpp's polling
    # The others split the cores between themselves.
    assert [p.cpus for p in placements[1:]] == [(0, 1), (2, 3)]


def test_threads_default_to_derived_in_the_config() -> None:
    assert LocalTierConfig(model="smollm2-135m", port=8101).threads is None
    assert LocalTierConfig(model="smollm2-135m", port=8101, threads=2).threads == 2


def test_this_machine_has_cores() -> None:
    cores = available_cores()
    assert cores and len(plan(SHIPPED, cores)) == 3


def test_the_placement_reaches_llama_server(tmp_path: Path) -> None:
    server = ServerBinary(tmp_path / "llama-server", tmp_path)
    pinned = server_command(server, TierSpec("cloud", tmp_path / "m.gguf", 8103, threads=2, threads_batch=2,
                                             cpus=(2, 3)))
    assert pinned[pinned.index("-t") + 1] == "2" and pinned[pinned.index("-tb") + 1] == "2"
    assert pinned[pinned.index("--cpu-mask") + 1] == "0xc" and "--poll" not in pinned
    shared = server_command(server, TierSpec("cloud", tmp_path / "m.gguf", 8103, threads=1, threads_batch=1,
                                             poll=0))
    assert shared[shared.index("--poll") + 1] == "0" and "--cpu-mask" not in shared
    assert Placement(1, 1, None, 0).describe() == "1 thread, cores shared, no polling"
    assert Placement(2, 2, (2, 3)).describe() == "2 threads on cpus 2-3"


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) pins the whole server")
def test_a_pinned_tier_runs_on_its_cpus_only(healthy_server: ServerBinary, tmp_path: Path,
                                              free_port: Callable[[], int]) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"GGUF")
    run_dir = tmp_path / "run"
    cpu = available_cores()[-1]
    tier = start_tier(healthy_server, TierSpec("edge", model, free_port(), threads=1, cpus=(cpu,)), run_dir)
    try:
        # Every thread of the server, not only llama.cpp's compute threads (taskset execs the server).
        for task in Path(f"/proc/{tier.pid}/task").iterdir():
            allowed = next(line for line in (task / "status").read_text().splitlines()
                           if line.startswith("Cpus_allowed_list:"))
            assert allowed.split()[1] == str(cpu)
        assert "--cpu-mask" in command_line(tier.pid)
        assert stop_recorded("edge", run_dir) == tier.pid  # still recognised as our llama-server
    finally:
        stop(tier, run_dir)
