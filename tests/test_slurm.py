"""The cluster profiles and the pipeline on a real (single-node) SLURM cluster.

Fast tests (always run): the profiles parse and resolve the resources they promise, and the
accounting and no-accounting SLURM profiles differ only in how job status is queried.

`slurm`-marked tests need a running SLURM (`bash .ci/slurm/bringup.sh start`) and
snakemake-executor-plugin-slurm. They are skipped, with the reason, where either is missing,
unless CAANET_REQUIRE_SLURM=1 (set by CI), where that is a failure. They clone the repository's
committed HEAD into tmp_path (as CI does, so the working tree's results/ is untouched), run the
`tiny` preset through the profile under `timeout -s INT`, and check from SLURM's own records
(squeue with a long MinJobAge, or sacct where accounting works) that the training jobs ran as
SLURM jobs with the CPUs, memory and time limit the preset asks for.

Environment: CAANET_SLURM_PROFILE (slurm | slurm-noacct; default: slurm where sacct works),
CAANET_SLURM_TIMEOUT_S (the bound on the Snakemake run, 1200 s).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "profiles"
BRINGUP = REPO / ".ci" / "slurm" / "bringup.sh"
SLURM_PLUGIN = "snakemake_executor_plugin_slurm"
# The one difference allowed between profiles/slurm and profiles/slurm-noacct.
STATUS_KEY = "slurm-status-command"
RUN_TIMEOUT_S = int(os.environ.get("CAANET_SLURM_TIMEOUT_S", "1200"))


def load_profile(name: str) -> dict:
    """The parsed config.yaml of profiles/<name>."""
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def plugin_installed() -> bool:
    return importlib.util.find_spec(SLURM_PLUGIN) is not None


# --------------------------------------------------------------------------------------------
# Fast checks of the profiles (no SLURM needed)


def test_noacct_profile_differs_from_slurm_profile_only_in_status_command():
    with_acct, no_acct = load_profile("slurm"), load_profile("slurm-noacct")
    differing = {k for k in with_acct.keys() | no_acct.keys() if with_acct.get(k) != no_acct.get(k)}
    assert differing == {STATUS_KEY}
    assert (with_acct[STATUS_KEY], no_acct[STATUS_KEY]) == ("sacct", "squeue")


def test_slurm_profile_keeps_only_the_gpu_request_in_set_resources():
    # CI replaces the whole set-resources key with `train_cell:gpu=0`: nothing else may live there.
    profile = load_profile("slurm")
    assert profile["executor"] == "slurm"
    assert profile["set-resources"] == {"train_cell": {"gpu": 1}}
    assert profile["retries"] >= 1 and profile["rerun-incomplete"] is True
    assert "attempt" in profile["default-resources"]["mem_mb"]


def test_local_gpu_profile_shares_one_gpu_by_declared_percent():
    # the card is 100 percent; training jobs declare their share (rules/train.smk: gpu_share), so
    # small cells share it and full-resolution cells (100) get it alone
    profile = load_profile("local-gpu")
    assert "executor" not in profile
    assert profile["cores"] == "all"
    assert profile["resources"] == ["gpu_share=100"]
    assert "set-resources" not in profile  # no whole-GPU request that would serialise every job


# A workflow with the profile-relevant rule names, to see what resources a profile resolves.
PROBE_SNAKEFILE = """
rule all:
    input: "b.txt", "c.txt"
    localrule: True

rule train_cell:
    output: "a.txt"
    threads: 2
    resources:
        mem_mb=lambda wc, attempt: 700 * attempt,
        runtime=lambda wc, attempt: 3 * attempt,
        gpu=0,
        gpu_share=25,
    shell: "touch {output}"

rule index_dataset:
    input: "a.txt"
    output: "b.txt"
    shell: "touch {output}"

rule render_report:
    input: "b.txt"
    output: "c.txt"
    group: "postprocess"
    localrule: True
    shell: "touch {output}"
"""


def dry_run_resources(workdir: Path, *args: str) -> dict[str, dict[str, str]]:
    """Run `snakemake -n` on the probe workflow; return {rule: {resource: value}} as printed."""
    (workdir / "Snakefile").write_text(PROBE_SNAKEFILE)
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--workflow-profile", "none", *args],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    found: dict[str, dict[str, str]] = {}
    rule = None
    for line in proc.stdout.splitlines():
        if m := re.match(r"\s*(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif (m := re.match(r"\s*resources: (.*)", line)) and rule:
            found[rule] = dict(item.split("=", 1) for item in m.group(1).split(", "))
    return found


@pytest.mark.parametrize("profile", ["slurm", "slurm-noacct"])
def test_slurm_profiles_resolve_gpu_partition_and_attempt_scaled_defaults(tmp_path, profile):
    if not plugin_installed():
        pytest.skip(f"{SLURM_PLUGIN} is not installed (pip install 'snakemake-executor-plugin-slurm==2.8.0')")
    res = dry_run_resources(tmp_path, "--profile", str(PROFILES / profile))
    assert res["train_cell"]["gpu"] == "1"  # the profile's GPU request beats the rule's 0
    assert res["train_cell"]["mem_mb"] == "700"  # the rule's own memory, not the default
    assert res["index_dataset"]["slurm_partition"] == "debug"
    assert res["index_dataset"]["mem_mb"] == "1000"  # "1000 * attempt" at attempt 1
    assert res["index_dataset"]["runtime"] == "30"
    # The CI override: no GPU, everything else unchanged.
    res = dry_run_resources(tmp_path, "--profile", str(PROFILES / profile), "--set-resources", "train_cell:gpu=0")
    assert res["train_cell"]["gpu"] == "0"
    assert res["train_cell"]["slurm_partition"] == "debug"


def test_local_gpu_profile_resolves_the_rules_gpu_share(tmp_path):
    res = dry_run_resources(tmp_path, "--profile", str(PROFILES / "local-gpu"))
    assert res["train_cell"]["gpu_share"] == "25"
    assert res["index_dataset"]["mem_mb"] == "1000"


def test_bringup_script_rejects_unknown_commands_and_reports_a_cluster_it_did_not_start(tmp_path):
    assert subprocess.run(["bash", "-n", str(BRINGUP)]).returncode == 0
    bad = subprocess.run(["bash", str(BRINGUP), "bogus"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "usage" in bad.stderr
    env = {**os.environ, "SLURM_BASE": str(tmp_path / "nothing-here")}
    status = subprocess.run(["bash", str(BRINGUP), "status"], capture_output=True, text=True, timeout=120, env=env)
    assert status.returncode == 1, status.stdout + status.stderr
    assert "status: DOWN" in status.stdout


# --------------------------------------------------------------------------------------------
# The pipeline on a real SLURM cluster


def _unavailable(reason: str):
    """Skip, or fail where CI demands SLURM (CAANET_REQUIRE_SLURM=1)."""
    if os.environ.get("CAANET_REQUIRE_SLURM") == "1":
        pytest.fail(f"CAANET_REQUIRE_SLURM=1 but {reason}")
    pytest.skip(reason)


def _run(cmd: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def sacct_works() -> bool:
    try:
        return _run(["sacct", "-n", "-X", "-S", "now"], timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="module")
def slurm_cluster() -> str:
    """The profile to use, once SLURM answers and the plugin is installed."""
    if shutil.which("sinfo") is None:
        _unavailable("SLURM is not installed (no sinfo); start one with: bash .ci/slurm/bringup.sh start")
    if not plugin_installed():
        _unavailable(f"{SLURM_PLUGIN} is not installed (pip install 'snakemake-executor-plugin-slurm==2.8.0')")
    try:
        states = _run(["sinfo", "-h", "-o", "%T"], timeout=20)
    except subprocess.TimeoutExpired:
        _unavailable("sinfo did not answer within 20 s")
    if states.returncode != 0 or not {"idle", "mixed", "allocated"} & set(states.stdout.split()):
        _unavailable(f"no SLURM node accepts jobs (sinfo: {states.stdout.strip() or states.stderr.strip()}); "
                     "start one with: bash .ci/slurm/bringup.sh start")
    profile = os.environ.get("CAANET_SLURM_PROFILE") or ("slurm" if sacct_works() else "slurm-noacct")
    if profile == "slurm-noacct":
        min_job_age = re.search(r"MinJobAge\s*=\s*(\d+)", _run(["scontrol", "show", "config"]).stdout)
        if not min_job_age or int(min_job_age.group(1)) < 600:
            _unavailable(f"without accounting the test reads squeue, which needs MinJobAge >= 600 s "
                         f"(got {min_job_age and min_job_age.group(1)})")
    return profile


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    comment: str  # the plugin's "rule_<rule>_wildcards_<...>"
    state: str
    cpus: int
    mem_mb: int
    time_limit_min: int

    @property
    def rule(self) -> str:
        """The rule (or `<group>_<rules>`) named in the comment; "" where SLURM shows none."""
        m = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", self.comment)
        return m.group(1) if m else ""


def _mem_mb(text: str) -> int:
    """'1000M', '2G', '1000' (MB) -> MB."""
    m = re.fullmatch(r"([\d.]+)([KMGT]?)\w*", text.strip())
    assert m, f"unreadable SLURM memory {text!r}"
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 ** 2}[m.group(2)]
    return round(float(m.group(1)) * scale)


def _minutes(text: str) -> int:
    """SLURM time limit '[days-]hours:minutes:seconds' or 'minutes:seconds' -> minutes."""
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + (parts[2] > 0)


def slurm_jobs(run_uuid: str, *, live: bool = False) -> list[SlurmJob]:
    """SLURM's record of every job of one Snakemake run (the plugin names them by the run uuid).

    From sacct where accounting works (it stores the comment only once a job ends), else, or with
    `live=True`, from squeue (finished jobs stay there for MinJobAge seconds).
    """
    if not live and sacct_works():
        out = _run(["sacct", "-X", "-P", "-n", "--name", run_uuid, "-S", "now-1day",
                    "-o", "JobID,Comment,State,AllocCPUS,ReqMem,Timelimit"]).stdout
    else:
        out = _run(["squeue", "--states=all", "-h", "--name", run_uuid, "-o", "%i|%k|%T|%C|%m|%l"]).stdout
    jobs = []
    for line in out.splitlines():
        job_id, comment, state, cpus, mem, limit = line.split("|")
        jobs.append(SlurmJob(job_id, comment, state.split()[0], int(cpus), _mem_mb(mem), _minutes(limit)))
    return sorted(jobs, key=lambda j: int(re.match(r"\d+", j.job_id).group()))  # squeue orders by state


def preset_train_resources(clone: Path, preset: str) -> dict:
    """presets.<preset>.resources.train merged over presets.base (as the workflow does)."""
    presets = yaml.safe_load((clone / "config.yaml").read_text())["presets"]
    return {**presets["base"]["resources"]["train"], **presets[preset].get("resources", {}).get("train", {})}


@pytest.fixture
def clone(tmp_path) -> Path:
    """The repository's committed HEAD, cloned like CI does."""
    dest = tmp_path / "caanet"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(dest)], check=True, timeout=120)
    if not (dest / "Snakefile").exists():
        pytest.fail("the committed HEAD has no Snakefile")
    return dest


def run_snakemake(clone: Path, profile: str, log: Path, target: str, *args: str) -> tuple[int, str, str]:
    """Snakemake through a SLURM profile, bounded; returns (exit code, output, run uuid)."""
    cmd = ["timeout", "-s", "INT", "-k", "60", str(RUN_TIMEOUT_S),
           sys.executable, "-m", "snakemake", target, "--profile", f"profiles/{profile}",
           # the CI cluster has no GPU (see profiles/slurm/config.yaml: set-resources)
           "--set-resources", "train_cell:gpu=0",
           # tiny jobs finish in seconds: look at them sooner than a real cluster would
           "--slurm-init-seconds-before-status-checks", "5",
           "--retries", "0", *args]
    with log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=clone, stdout=fh, stderr=subprocess.STDOUT,
                            timeout=RUN_TIMEOUT_S + 120).returncode
    text = log.read_text()
    m = re.search(r"SLURM run ID: (\S+)", text)
    return rc, text, m.group(1) if m else ""


@pytest.mark.slurm
def test_tiny_preset_runs_on_slurm_with_the_requested_resources(slurm_cluster, clone, tmp_path):
    rc, text, run_uuid = run_snakemake(clone, slurm_cluster, tmp_path / "snakemake.log", "all",
                                       "--config", "preset=tiny")
    assert rc == 0, f"snakemake exited {rc} (124: killed after {RUN_TIMEOUT_S} s)\n{text[-6000:]}"
    assert run_uuid, "no 'SLURM run ID' in the log: did the slurm executor run at all?"
    # a job counted twice (e.g. the rendering jobs duplicated in the postprocess group when `all` asks for
    # their outputs in every run, snakemake#4202: workflow_support.deleted_outputs) shows as more steps
    # done than planned
    overcount = [m.group(0) for m in re.finditer(r"(\d+) of (\d+) steps", text) if int(m[1]) > int(m[2])]
    assert not overcount, f"more steps done than planned: {overcount[:3]}"

    jobs = slurm_jobs(run_uuid)
    train = [j for j in jobs if j.rule == "train_cell"]
    evaluations = sorted((clone / "results" / "cells").glob("*/*/seed*/evaluation.json"))
    assert evaluations, "no cell was trained"
    assert len(train) == len(evaluations), (
        f"{len(evaluations)} cells trained but SLURM ran {len(train)} train_cell jobs: {jobs}")
    want = preset_train_resources(clone, "tiny")
    for job in train:
        assert job.state == "COMPLETED", job
        assert job.cpus == want["threads"], job
        assert job.mem_mb == want["mem_mb"], job  # attempt 1: the preset's value
        assert job.time_limit_min == want["runtime"], job
    assert all(j.state == "COMPLETED" for j in jobs), jobs

    reports = clone / "reports"
    for name in ("paper.html", "paper.tex", "tables/table1.html", "figures/fig5_layers.png"):
        assert (reports / name).is_file(), f"reports/{name} missing after the SLURM run"


# --------------------------------------------------------------------------------------------
# Preemption: a training job stopped with SIGTERM checkpoints, fails, and its retry resumes

PREEMPT_CELL = ("tiny2018", "cnn_pool-max-teacher_forcing-L1", 0)  # a Table I cell of the tiny preset
# About 10 ms an iteration at the tiny widths: long enough to catch the job running after its first
# checkpoint, checkpointed often.
PREEMPT_TRAINING = {"iterations": 4000, "checkpoint_every": 20, "log_every": 100}


def wait_until(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None, log: Path | None = None):
    """Poll `predicate` every 0.5 s; fail after `timeout_s` (or when `proc` ends first)."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log else ""
            pytest.fail(f"snakemake ended (exit {proc.returncode}) before {what}\n{tail}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slurm
def test_training_job_stopped_with_sigterm_resumes_from_its_checkpoint(slurm_cluster, clone, tmp_path):
    dataset, cell, seed = PREEMPT_CELL
    cell_dir = clone / "results" / "cells" / dataset / cell / f"seed{seed}"
    extra = tmp_path / "preempt.yaml"
    extra.write_text(yaml.safe_dump({"presets": {"tiny": {"training": PREEMPT_TRAINING}}}))
    log = tmp_path / "snakemake.log"
    run_uuid = ""
    cmd = ["timeout", "-s", "INT", "-k", "60", str(RUN_TIMEOUT_S),
           sys.executable, "-m", "snakemake", str(cell_dir.relative_to(clone) / "evaluation.json"),
           "--profile", f"profiles/{slurm_cluster}", "--set-resources", "train_cell:gpu=0",
           "--slurm-init-seconds-before-status-checks", "5", "--retries", "1",
           "--configfile", str(extra), "--config", "preset=tiny"]
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=clone, stdout=fh, stderr=subprocess.STDOUT)
    try:
        run_uuid = wait_until(lambda: (m := re.search(r"SLURM run ID: (\S+)", log.read_text())) and m.group(1),
                              120, "the SLURM run id", proc, log)
        wait_until(lambda: (cell_dir / "checkpoints" / "last.pt").exists(), RUN_TIMEOUT_S / 2,
                   "the training job's first checkpoint", proc, log)
        jobs = slurm_jobs(run_uuid, live=True)
        running = [j for j in jobs if j.rule == "train_cell" and j.state == "RUNNING"]
        assert len(running) == 1, f"expected one running train_cell job: {jobs}"
        subprocess.run(["scancel", "--signal=TERM", running[0].job_id], check=True, timeout=30)
        rc = proc.wait(timeout=RUN_TIMEOUT_S + 120)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # snakemake cancels its SLURM jobs and exits
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
        if run_uuid:  # whatever is left of this run only
            subprocess.run(["scancel", "--name", run_uuid], timeout=30)
    text = log.read_text()
    assert rc == 0, f"snakemake exited {rc}\n{text[-6000:]}"

    train = [j for j in slurm_jobs(run_uuid) if j.rule == "train_cell"]
    assert [j.state for j in train] == ["FAILED", "COMPLETED"], train
    assert train[0].job_id == running[0].job_id
    # the retry asks for twice the memory and time (rules/common.smk: value * attempt)
    assert (train[1].mem_mb, train[1].time_limit_min) == (2 * train[0].mem_mb, 2 * train[0].time_limit_min), train
    rule_log = (clone / "results" / "logs" / "train_cell" / dataset / cell / f"seed{seed}.log").read_text()
    resumed = re.search(r"resuming from .* at iteration (\d+)", rule_log)
    assert resumed and int(resumed.group(1)) > 0, rule_log[-3000:]
    evaluation = yaml.safe_load((cell_dir / "evaluation.json").read_text())
    assert evaluation["iterations"] == PREEMPT_TRAINING["iterations"]
