"""The SLURM profile (profiles/slurm) on a real SLURM cluster: a one-node cluster on localhost.

Two kinds of tests live here:

- checks of the profile itself (no cluster needed, seconds): what `snakemake --profile
  profiles/slurm` really sets once Snakemake has also read the workflow profile profiles/default,
  and that every GPU rule of the workflow has its cluster resources;
- `@pytest.mark.slurm` integration tests on the cluster that `tests/slurm/start.sh` starts (root,
  Debian): the smoke preset through SLURM, compared with a local run, and a detector training
  killed with `scancel` and resumed on the rerun. `tests/slurm/ci.sh` runs them in CI; elsewhere
  they skip with the reason (set BILLETJAX_SLURM_REQUIRED=1 to fail instead, as ci.sh does).

The runs happen in copies of the workflow under pytest's tmp_path (the cluster's node is this
machine, so that directory is "shared"), never in the checkout's results/.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SMOKE = "tests/presets/smoke.yaml"
PROFILE = ROOT / "profiles/slurm/config.yaml"
TEST_OVERRIDES = ROOT / "tests/slurm/profile/config.yaml"
PARTITION = os.environ.get("BILLETJAX_SLURM_PARTITION", "billetjax")
VENV_BIN = Path(sys.executable).parent
RUN_LIMIT_S = int(os.environ.get("BILLETJAX_SLURM_RUN_LIMIT_S", "1500"))
REQUIRED = os.environ.get("BILLETJAX_SLURM_REQUIRED") == "1"

# what a copy of the workflow leaves out: outputs, state, environments, VCS
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv", ".snakemake", ".pytest_cache", "__pycache__", "*.egg-info",
    "results", "logs", "benchmarks", "build", "report.html",
)


# ---------------------------------------------------------------------------------------- helpers
def merge(base: dict, overrides: dict) -> dict:
    """`overrides` merged into a copy of `base`: mappings key by key, all other values replaced."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def write_test_profile(directory: Path) -> Path:
    """profiles/slurm with the test cluster's overrides (tests/slurm/profile) merged in."""
    profile = merge(yaml.safe_load(PROFILE.read_text()), yaml.safe_load(TEST_OVERRIDES.read_text()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return directory


def effective_args(argv: list[str], cwd: Path):
    """The arguments Snakemake ends up with for `snakemake ARGV` run in `cwd` (profiles applied)."""
    from snakemake.cli import parse_args

    old = Path.cwd()
    os.chdir(cwd)
    try:
        return parse_args(argv)[1]
    finally:
        os.chdir(old)


def resource_names(resources) -> set[str]:
    """The names set by a parsed --default-resources / --resources argument."""
    return set(dict(resources)) if resources is not None else set()


@dataclass
class Job:
    """One job of a Snakemake run, from the block Snakemake prints when it starts it."""

    jobid: int
    rule: str
    local: bool
    fields: dict = field(default_factory=dict)
    slurm_id: str | None = None
    slurm_log: str | None = None

    @property
    def gpu(self) -> bool:
        return re.search(r"(^|,\s*)gpu=1\b", self.fields.get("resources", "")) is not None

    @property
    def logs(self) -> list[str]:
        return [p.strip() for p in self.fields.get("log", "").split(",") if p.strip()]


def parse_run(output: str) -> tuple[dict[int, Job], str | None]:
    """The jobs of a Snakemake run and the SLURM run id (job name of its sbatch jobs)."""
    jobs: dict[int, Job] = {}
    current = None
    for line in output.splitlines():
        m = re.match(r"^(local)?rule (\w+):\s*$", line)
        if m:
            current = {"rule": m.group(2), "local": bool(m.group(1)), "fields": {}}
            continue
        if current is not None:
            f = re.match(r"^\s{4}(\w+): (.*)$", line)
            if f:
                current["fields"][f.group(1)] = f.group(2).strip()
                if f.group(1) == "jobid":
                    jobid = int(f.group(2))
                    jobs[jobid] = Job(jobid, current["rule"], current["local"], current["fields"])
                continue
            current = None
    for m in re.finditer(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (.+?)\)\.", output):
        job = jobs.get(int(m.group(1)))
        if job is not None:
            job.slurm_id, job.slurm_log = m.group(2), m.group(3)
    run_id = re.search(r"SLURM run ID: (\S+)", output)
    return jobs, run_id.group(1) if run_id else None


def make_workspace(dest: Path) -> Path:
    """A copy of the workflow (Snakefile, rules, scripts, envs, configs, profiles, package)."""
    shutil.copytree(ROOT, dest, ignore=COPY_IGNORE, symlinks=True)
    return dest


def run_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    # jobs inherit this environment (sbatch --export=ALL): they find the venv's python first
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("SNAKEMAKE_PROFILE", None)
    return env


def snakemake(workspace: Path, *args: str, limit_s: int = RUN_LIMIT_S, background: bool = False):
    """Run Snakemake in `workspace`, killed with SIGKILL after `limit_s` seconds.

    SIGKILL, because Snakemake takes SIGTERM as "finish the running jobs first".
    """
    cmd = ["timeout", "-s", "KILL", str(limit_s), str(VENV_BIN / "python"), "-m", "snakemake", *args]
    if background:
        out = open(workspace / "snakemake.out", "w")
        return subprocess.Popen(cmd, cwd=workspace, env=run_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
    t0 = time.monotonic()
    result = subprocess.run(cmd, cwd=workspace, env=run_env(), capture_output=True, text=True)
    result.seconds = time.monotonic() - t0
    (workspace / "snakemake.out").write_text(result.stdout + result.stderr)
    return result


def tail(text: str, n: int = 60) -> str:
    return "\n".join(text.splitlines()[-n:])


def slurm(*args: str) -> str:
    return subprocess.run(list(args), capture_output=True, text=True, check=True, timeout=30).stdout


def squeue_jobs(run_id: str) -> dict[str, tuple[str, str]]:
    """{SLURM job id: (state, comment)} of every job of a Snakemake run still known to slurmctld."""
    out = slurm("squeue", "-h", "-t", "all", "-n", run_id, "-o", "%i|%T|%k")
    rows = [line.split("|", 2) for line in out.splitlines() if line.strip()]
    return {jid: (state, comment) for jid, state, comment in rows}


def cancel_run(run_id: str | None) -> None:
    if run_id and shutil.which("scancel"):
        subprocess.run(["scancel", "-n", run_id], capture_output=True, timeout=30)


def table_files(workspace: Path) -> dict[str, bytes]:
    tables = workspace / "results" / "tables"
    return {p.relative_to(tables).as_posix(): p.read_bytes() for p in sorted(tables.rglob("*.csv"))}


def assert_same_tables(reference: Path, other: Path) -> None:
    ref, got = table_files(reference), table_files(other)
    assert ref, f"the reference run made no tables under {reference}/results/tables"
    assert sorted(got) == sorted(ref), f"tables differ in names: {sorted(ref)} vs {sorted(got)}"
    differing = [name for name in ref if ref[name] != got[name]]
    assert not differing, "tables differ from the local run: " + ", ".join(
        f"{name}:\n--- local\n{ref[name].decode()}\n--- slurm\n{got[name].decode()}" for name in differing
    )


def cuda_visible_devices(job: Job, workspace: Path) -> str | None:
    """The CUDA_VISIBLE_DEVICES a job's script logged (its rule log, else its SLURM log)."""
    candidates = [workspace / p for p in job.logs]
    if job.slurm_log:
        candidates.append(Path(job.slurm_log))
    for path in candidates:
        if path.is_file():
            m = re.search(r"CUDA_VISIBLE_DEVICES\W{0,3}([^\s,;)'\"]*)", path.read_text(errors="replace"))
            if m:
                return m.group(1)
    return None


def cluster_problem() -> str | None:
    """Why the integration tests cannot run here, or None when the test cluster is up."""
    if not shutil.which("sinfo"):
        return "no `sinfo` on PATH: SLURM is not installed (as root: tests/slurm/start.sh installs and starts it)"
    try:
        state = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%a"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "`sinfo` timed out: slurmctld does not answer"
    if state.returncode != 0 or state.stdout.strip() != "up":
        why = (state.stderr or state.stdout).strip() or "no such partition"
        who = "" if os.geteuid() == 0 else " (needs root)"
        return f"the test cluster is not up ({why}); start it with tests/slurm/start.sh{who}"
    return None


@pytest.fixture(scope="module")
def cluster(request):
    markexpr = request.config.getoption("-m") or ""
    if not REQUIRED and not ("slurm" in markexpr and "not slurm" not in markexpr):
        pytest.skip("the SLURM integration tests take minutes: they run with `pytest -m slurm` "
                    "(tests/slurm/ci.sh starts the cluster and runs them)")
    problem = cluster_problem()
    if problem:
        if REQUIRED:
            pytest.fail(problem)
        pytest.skip(problem)
    if not (ROOT / SMOKE).is_file():
        (pytest.fail if REQUIRED else pytest.skip)(f"{SMOKE} is missing: the tests run the smoke preset")
    return PARTITION


@pytest.fixture(scope="module")
def local_run(cluster, tmp_path_factory):
    """The smoke preset run locally, as `make run` does: the reference for the cluster runs."""
    ws = make_workspace(tmp_path_factory.mktemp("local") / "wf")
    result = snakemake(ws, "--profile", "profiles/default", "--cores", "2", "--resources", "gpu=1", "--configfile", SMOKE)
    print(f"local smoke run: {result.seconds:.0f} s")
    assert result.returncode == 0, "local smoke run failed:\n" + tail(result.stdout + result.stderr)
    return ws


# What the resume test asks for: one experiment's detector and one of its metrics files.
RESUME_TARGET = "results/metrics/exp1/seed0/testset1.json"


def slurm_snakemake(ws: Path, *extra: str, background: bool = False, limit_s: int = RUN_LIMIT_S):
    """The smoke preset through profiles/slurm (+ the test cluster's overrides) in `ws`."""
    profile = write_test_profile(ws / ".test-profile")
    # --workflow-profile none: test profiles/slurm itself; test_profile_* check that the
    # workflow profile profiles/default does not change what it sets
    # --configfile takes several values: it comes last, after any targets in `extra`
    args = [*extra, "--profile", str(profile), "--workflow-profile", "none", "--configfile", SMOKE]
    return snakemake(ws, *args, background=background, limit_s=limit_s)


# ------------------------------------------------------------------- the profile, without cluster
def test_profile_survives_the_workflow_profile():
    """`snakemake --profile profiles/slurm` as a user types it, in the checkout.

    Snakemake also reads profiles/default as the *workflow profile*, and every key set there
    replaces the same key of profiles/slurm whole (default-resources included). So
    profiles/default must not set the keys a cluster run depends on.
    """
    args = effective_args(["--profile", "profiles/slurm", "-n"], ROOT)
    profile = yaml.safe_load(PROFILE.read_text())
    assert args.executor == "slurm"
    defaults = resource_names(args.default_resources)
    for name in profile["default-resources"]:
        assert name in defaults, (
            f"default-resources '{name}' of profiles/slurm is lost: profiles/default sets "
            "default-resources, which replaces the cluster's (runtime, partition, memory)"
        )
    limits = resource_names(args.resources)
    assert "gpu" not in limits, (
        "profiles/default's `resources: gpu=...` applies to cluster runs too and lets only one GPU "
        "job run at a time on the whole cluster; pass --resources gpu=1 on the local command line"
    )
    assert int(args.retries) >= 1, "profiles/default turns off the retries that resume trainings"
    assert args.rerun_incomplete


def test_merged_test_profile_keeps_the_real_profile():
    base = yaml.safe_load(PROFILE.read_text())
    overrides = yaml.safe_load(TEST_OVERRIDES.read_text())
    merged = merge(base, overrides)
    assert merged["executor"] == "slurm" and merged["retries"] == base["retries"]
    assert merged["default-resources"]["runtime"] == base["default-resources"]["runtime"]
    assert merged["default-resources"]["slurm_partition"] == PARTITION
    for rule, resources in base["set-resources"].items():
        assert merged["set-resources"][rule]["runtime"] == resources["runtime"]
        assert merged["set-resources"][rule]["slurm_partition"] == PARTITION


def test_gpu_rules_have_cluster_resources():
    """Every rule that declares gpu=1 where JAX has a GPU (BILLETJAX_GPUS=1: the rules' `gpu`
    follows the machine) has its partition, time, memory and `gpu: 1` in profiles/slurm; on a
    CPU-only machine the same rules declare gpu=0."""
    if not (ROOT / SMOKE).is_file():
        pytest.skip(f"{SMOKE} is not there yet")

    def gpu_rules(gpus: str) -> set[str]:
        dry = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--forceall", "--workflow-profile", "none",
             "--cores", "1", "--configfile", SMOKE],
            cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "BILLETJAX_GPUS": gpus},
        )
        assert dry.returncode == 0, tail(dry.stdout + dry.stderr)
        jobs, _ = parse_run(dry.stdout + dry.stderr)
        return {job.rule for job in jobs.values() if job.gpu}

    on_gpu = gpu_rules("1")
    assert {"gan_train", "detector_train", "detector_predict"} <= on_gpu
    assert gpu_rules("0") == set()
    profile = yaml.safe_load(PROFILE.read_text())
    missing = on_gpu - set(profile["set-resources"])
    assert not missing, f"GPU rules without set-resources in profiles/slurm: {sorted(missing)}"
    without = sorted(r for r in on_gpu if profile["set-resources"][r].get("gpu") != 1)
    assert not without, f"GPU rules whose profiles/slurm entry does not ask for the GPU (gpu: 1): {without}"
    listed = subprocess.run(
        [sys.executable, "-m", "snakemake", "--list-rules", "--workflow-profile", "none", "--configfile", SMOKE],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    rules = set(listed.stdout.split())
    stale = set(profile["set-resources"]) - rules
    assert not stale, f"profiles/slurm sets resources for rules the workflow lacks: {sorted(stale)}"


# ------------------------------------------------------------------------ on the SLURM cluster
@pytest.mark.slurm
@pytest.mark.timeout(2 * RUN_LIMIT_S + 120)
def test_smoke_run_through_slurm(cluster, local_run, tmp_path):
    ws = make_workspace(tmp_path / "wf")
    result = slurm_snakemake(ws)
    output = result.stdout + result.stderr
    jobs, run_id = parse_run(output)
    try:
        print(f"SLURM smoke run: {result.seconds:.0f} s, {len(jobs)} jobs")
        assert result.returncode == 0, "SLURM smoke run failed:\n" + tail(output)
        assert run_id, "no 'SLURM run ID' in Snakemake's output: was the slurm executor used?"

        # every job but the local ones (rule all) went through sbatch, and SLURM ran it to the end
        remote = [job for job in jobs.values() if not job.local]
        assert remote, "the run started no jobs"
        unsubmitted = [f"{job.rule} (job {job.jobid})" for job in remote if not job.slurm_id]
        assert not unsubmitted, f"jobs that did not go through SLURM: {unsubmitted}"
        known = squeue_jobs(run_id)
        for job in remote:
            state, comment = known.get(job.slurm_id, ("unknown to slurmctld", ""))
            assert state == "COMPLETED", f"{job.rule}: SLURM job {job.slurm_id} is {state}"
            assert comment.startswith(f"rule_{job.rule}"), (job.rule, comment)
            assert Path(job.slurm_log).is_file(), f"no SLURM log {job.slurm_log}"
            assert f"rule {job.rule}:" in Path(job.slurm_log).read_text(errors="replace")

        # the same tables as the local run of the same preset
        assert_same_tables(local_run, ws)

        # the GPU jobs asked SLURM for the GPU, and got it (SLURM sets CUDA_VISIBLE_DEVICES)
        gpu_jobs = [job for job in remote if job.gpu]
        assert gpu_jobs, "no job of the smoke run declared gpu=1"
        for job in gpu_jobs:
            details = slurm("scontrol", "show", "job", "-d", job.slurm_id)
            assert re.search(r"TresPerJob=\S*gres:gpu:1", details), f"{job.rule}: no --gpus=1\n{details}"
            assert re.search(r"JOB_GRES=gpu:1\b", details), f"{job.rule}: no GPU allocated\n{details}"
            visible = cuda_visible_devices(job, ws)
            assert visible not in (None, "", "None", "unset", "NoDevFiles"), (
                f"{job.rule} (SLURM job {job.slurm_id}): CUDA_VISIBLE_DEVICES not set in its log "
                f"{job.logs}: {visible!r}"
            )
        for job in remote:
            if not job.gpu:
                details = slurm("scontrol", "show", "job", "-d", job.slurm_id)
                assert "gres:gpu" not in details and "JOB_GRES=gpu" not in details, f"{job.rule} got a GPU"
    finally:
        cancel_run(run_id)


def finished_checkpoints(state_dir: Path) -> list[int]:
    """Steps of the complete checkpoints under a training's resumable state (orbax step folders)."""
    steps = set()
    try:
        for path in state_dir.rglob("*"):
            # orbax writes <step>.orbax-checkpoint-tmp-* and renames it to <step> when complete
            if path.name.isdigit() and path.is_dir():
                steps.add(int(path.name))
    except FileNotFoundError:  # a temporary folder renamed while we looked
        return finished_checkpoints(state_dir)
    return sorted(steps)


def stop_when_checkpointed(run: subprocess.Popen, ws: Path, deadline: float) -> tuple[Job, Path]:
    """Watch a running workflow; freeze the first detector training that has saved a checkpoint.

    The smoke preset's trainings leave well under a second between their first checkpoint and
    their end, so the state folder is polled every 20 ms and the job is suspended at once
    (`scontrol suspend`: SIGSTOP to all its processes); the caller then cancels it.
    """
    victim = state_dir = None
    out_path = ws / "snakemake.out"
    while run.poll() is None and time.monotonic() < deadline:
        if victim is None:
            jobs, _ = parse_run(out_path.read_text(errors="replace"))
            trainings = sorted(
                (j for j in jobs.values() if "params.msgpack" in j.fields.get("output", "") and j.slurm_id),
                key=lambda j: j.jobid,
            )
            if trainings:
                victim = trainings[0]
                params = victim.fields["output"].split(",")[0].strip()
                state_dir = ws / Path(params).parent / "state"
        elif finished_checkpoints(state_dir):
            subprocess.run(["scontrol", "suspend", victim.slurm_id], capture_output=True, timeout=30)
            return victim, state_dir
        time.sleep(0.02 if victim is not None else 0.5)
    pytest.fail(
        f"no detector training was seen with a checkpoint before the run ended (victim: "
        f"{victim and victim.fields.get('wildcards')}, state: {state_dir}):\n" + tail(out_path.read_text())
    )


@pytest.mark.slurm
@pytest.mark.timeout(3 * RUN_LIMIT_S + 120)
def test_killed_training_resumes_on_rerun(cluster, local_run, tmp_path):
    """scancel a detector training once it has a checkpoint; the rerun resumes from there.

    Only experiment 1's path to one metrics file is run (data, its set, its training, a
    prediction): the whole DAG through SLURM is test_smoke_run_through_slurm's.
    """
    ws = make_workspace(tmp_path / "wf")
    # no retries in the first run: the killed job must fail, so that the *rerun* resumes it
    first = slurm_snakemake(ws, RESUME_TARGET, "--retries", "0", background=True)
    out_path = ws / "snakemake.out"
    run_id = None
    try:
        victim, state_dir = stop_when_checkpointed(first, ws, time.monotonic() + RUN_LIMIT_S)
        state = squeue_jobs(parse_run(out_path.read_text())[1]).get(victim.slurm_id, ("?", ""))[0]
        assert state in ("SUSPENDED", "RUNNING"), f"the training to kill is {state}, no longer running"
        slurm("scancel", victim.slurm_id)
        killed_at = finished_checkpoints(state_dir)
        first.wait(timeout=RUN_LIMIT_S)
        output = out_path.read_text(errors="replace")
        jobs, run_id = parse_run(output)
        print(f"killed SLURM job {victim.slurm_id} ({victim.rule}, {victim.fields.get('wildcards')}) "
              f"with checkpoints {killed_at}")
        assert first.returncode != 0, "the run with a cancelled training did not fail"
        assert re.search(rf"SLURM-job '{victim.slurm_id}' failed, SLURM status is: 'CANCELLED'", output), tail(output)
        params = ws / victim.fields["output"].split(",")[0].strip()
        assert not params.exists(), f"{params} exists although its training was killed"
        last = finished_checkpoints(state_dir)[-1]

        rerun = slurm_snakemake(ws, RESUME_TARGET)
        output = rerun.stdout + rerun.stderr
        print(f"rerun after the kill: {rerun.seconds:.0f} s")
        assert rerun.returncode == 0, "rerun failed:\n" + tail(output)
        jobs, run_id = parse_run(output)
        again = [job for job in jobs.values() if job.fields.get("output") == victim.fields["output"]]
        assert again and again[0].slurm_id, "the killed training was not run again through SLURM"
        text = "\n".join((ws / p).read_text(errors="replace") for p in again[0].logs if (ws / p).is_file())
        resumed = [int(n) for n in re.findall(r"resum.*?\bstep\D{0,3}(\d+)", text, flags=re.IGNORECASE)]
        assert resumed, f"the rerun training did not log that it resumed:\n{tail(text, 30)}"
        assert resumed[-1] == last > 0, f"resumed from step {resumed[-1]}, the last checkpoint was {last}"
        # the resumed training's metrics are the unbroken local run's, byte for byte
        assert (ws / RESUME_TARGET).read_bytes() == (local_run / RESUME_TARGET).read_bytes()
    finally:
        if first.poll() is None:
            first.kill()
        cancel_run(run_id)
