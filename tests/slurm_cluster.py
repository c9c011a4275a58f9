"""A real single-node SLURM cluster on localhost, for tests (Debian slurm-wlm 22.05 + munge).

Derived from ../shared/reference/slurm_single_node.sh (a tested recipe), with one difference:
everything the cluster writes lives in one private state folder. slurm.conf is passed to
the daemons with -f and to the clients (sbatch, squeue, sacct, ...) through SLURM_CONF; munge
listens on a private socket (slurm.conf AuthInfo=socket=...); MariaDB keeps its data, socket
and port in the state folder. Nothing under /etc, /run or /var is changed, and stop() ends
every daemon it started by PID (after cancelling the cluster's jobs).

    cluster = SlurmCluster(accounting=True)
    cluster.start()
    subprocess.run(["sbatch", ...], env=cluster.env)
    cluster.stop()

ensure_slurm_installed() installs the Debian packages (apt-get, as root) when they are
missing, or returns the reason it cannot.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

APT_PACKAGES = ("slurm-wlm", "munge", "slurmdbd", "mariadb-server")
APT_COMMAND = "apt-get install -y -qq --no-install-recommends " + " ".join(APT_PACKAGES)
_BINARIES = {
    "slurmctld": "slurm-wlm",
    "slurmd": "slurm-wlm",
    "sbatch": "slurm-wlm",
    "sacct": "slurm-wlm",
    "srun": "slurm-wlm",
    "sacctmgr": "slurm-wlm",
    "munged": "munge",
    "slurmdbd": "slurmdbd",
    "mariadbd": "mariadb-server",
    "mariadb-install-db": "mariadb-server",
    "mariadb": "mariadb-server",
}
_SYSTEM_USERS = ("slurm", "munge", "mysql")
CLUSTER_NAME = "sccohorttest"
ACCOUNT = "sccohort"
PARTITION = "debug"


def _which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def missing_binaries() -> list[str]:
    missing = [name for name in _BINARIES if _which(name) is None]
    for user in _SYSTEM_USERS:
        try:
            pwd.getpwnam(user)
        except KeyError:
            missing.append(f"user {user}")
    return missing


def ensure_slurm_installed(allow_install: bool = True) -> str | None:
    """Install slurm-wlm, munge, slurmdbd and mariadb-server when missing.

    Returns None when everything is present, else the reason the cluster cannot run here.
    """
    missing = missing_binaries()
    if not missing:
        return None
    if not allow_install:
        return f"SLURM test cluster needs {', '.join(missing)}; SCCOHORT_SLURM_INSTALL=0 forbids installing"
    if os.geteuid() != 0:
        return f"SLURM test cluster needs {', '.join(missing)} and root to install them: sudo {APT_COMMAND}"
    if shutil.which("apt-get") is None:
        return f"SLURM test cluster needs {', '.join(missing)}; no apt-get on this machine to install them"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], APT_COMMAND.split()):
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(command)}` did not finish within 20 min"
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-5:]
            return f"`{' '.join(command)}` failed (exit {result.returncode}): " + " | ".join(tail)
    missing = missing_binaries()
    return f"still missing after apt-get install: {', '.join(missing)}" if missing else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(predicate, timeout: float, what: str, log: Path | None = None, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    detail = ""
    if log is not None and log.exists():
        detail = "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-20:])
    raise RuntimeError(f"SLURM test cluster: timed out after {timeout:.0f} s waiting for {what}{detail}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class SlurmCluster:
    """One node (localhost) and one partition (debug), optionally with slurmdbd accounting."""

    def __init__(self, accounting: bool = True, root: str | os.PathLike | None = None):
        self.accounting = accounting
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="sccohort-slurm-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.pids: dict[str, int] = {}  # daemon name -> PID, in start order
        self.cpus = os.cpu_count() or 1
        mem_total_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        self.memory_mb = int(mem_total_kb / 1024 * 0.8)
        self.ports = {name: _free_port() for name in ("slurmctld", "slurmd", "slurmdbd", "mariadb")}
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.bin = self._srun_wrapper()

    def _srun_wrapper(self) -> Path:
        """A bin/ folder with an `srun` that knows this cluster's slurm.conf.

        Inside a job, snakemake-executor-plugin-slurm-jobstep (0.6.1) removes every SLURM_*
        variable except the job's identity before it calls `srun`, SLURM_CONF included, so srun
        would look for /etc/slurm/slurm.conf. Real clusters keep slurm.conf there (or serve it
        configless); this private test cluster does not, so srun is wrapped instead.
        """
        folder = self.root / "bin"
        folder.mkdir(exist_ok=True)
        wrapper = folder / "srun"
        wrapper.write_text(
            f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec {_which("srun") or "/usr/bin/srun"} "$@"\n'
        )
        wrapper.chmod(0o755)
        return folder

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF (and the srun wrapper on PATH): for every client and snakemake."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        env["PATH"] = f"{self.bin}:{env.get('PATH', '')}:/usr/sbin:/sbin"
        return env

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(
                f"SLURM test cluster: `{' '.join(command)}` failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def _dir(self, name: str, owner: str = "root", mode: int = 0o755) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, owner, owner)
        path.chmod(mode)
        return path

    # ------------------------------------------------------------------ start
    def start(self) -> SlurmCluster:
        try:
            self._start_munge()
            if self.accounting:
                self._start_mariadb()
            self._write_slurm_conf()
            if self.accounting:
                self._start_slurmdbd()
            self._start_slurmctld()
            self._start_slurmd()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_munge(self) -> None:
        folder = self._dir("munge", "munge", 0o755)
        key = folder / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        pid_file = folder / "munged.pid"
        subprocess.run(
            [
                "runuser", "-u", "munge", "--", _which("munged"),
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={pid_file}",
                f"--log-file={folder / 'munged.log'}",
                f"--seed-file={folder / 'munged.seed'}",
            ],
            check=True, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        _wait(lambda: _read_pid(pid_file) is not None, 10, "munged's PID file", folder / "munged.log")
        self.pids["munged"] = _read_pid(pid_file)
        _wait(self.munge_socket.exists, 10, "the munge socket", folder / "munged.log")
        check = subprocess.run(
            f"munge -n -S {self.munge_socket} | unmunge -S {self.munge_socket}",
            shell=True, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if "Success" not in check.stdout:
            raise RuntimeError(f"SLURM test cluster: munge does not work: {check.stdout}{check.stderr}")

    def _start_mariadb(self) -> None:
        folder = self._dir("mysql", "mysql", 0o755)
        data = folder / "data"
        log = folder / "mariadb.log"
        if not (data / "mysql").exists():
            self._check_call(
                _which("mariadb-install-db"), "--no-defaults", "--user=mysql", f"--datadir={data}",
                "--auth-root-authentication-method=socket", "--skip-test-db", timeout=180,
            )  # fmt: skip
        sock = folder / "mysqld.sock"
        pid_file = folder / "mysqld.pid"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [
                    "runuser", "-u", "mysql", "--", _which("mariadbd"), "--no-defaults",
                    f"--datadir={data}", f"--socket={sock}", f"--pid-file={pid_file}",
                    f"--port={self.ports['mariadb']}", "--bind-address=127.0.0.1",
                    "--skip-name-resolve", f"--log-error={log}",
                ],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.pids["mariadb_runuser"] = process.pid
        _wait(
            lambda: sock.exists() and _read_pid(pid_file) is not None and _port_open(self.ports["mariadb"]),
            120, "MariaDB", log,
        )  # fmt: skip
        self.pids["mariadb"] = _read_pid(pid_file)
        sql = (
            "CREATE DATABASE IF NOT EXISTS slurm_acct_db;"
            "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmdbpass';"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
            "FLUSH PRIVILEGES;"
        )
        self._check_call(_which("mariadb"), "--no-defaults", f"--socket={sock}", "-uroot", "-e", sql)

    def _write_slurm_conf(self) -> None:
        etc = self._dir("etc", "root", 0o755)
        log = self._dir("log", "slurm", 0o755)
        ctld = self._dir("slurmctld", "slurm", 0o755)
        spool = self._dir("slurmd", "root", 0o755)
        if self.accounting:
            accounting = (
                "AccountingStorageType=accounting_storage/slurmdbd\n"
                "AccountingStorageHost=localhost\n"
                f"AccountingStoragePort={self.ports['slurmdbd']}\n"
                # store --comment (the executor plugin puts rule_<name>_wildcards_<...> there)
                "AccountingStoreFlags=job_comment\n"
                # slurmctld -> slurmdbd authenticates through this munge socket, not AuthInfo
                f"AccountingStoragePass={self.munge_socket}\n"
                "JobAcctGatherType=jobacct_gather/linux\n"
                "JobAcctGatherFrequency=30\n"
            )
        else:
            accounting = (
                "AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n"
            )
        self.conf.write_text(
            f"""ClusterName={CLUSTER_NAME}
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={ctld}
SlurmdSpoolDir={spool}
SlurmctldPidFile={log}/slurmctld.pid
SlurmdPidFile={log}/slurmd.pid
SlurmctldLogFile={log}/slurmctld.log
SlurmdLogFile={log}/slurmd.log
SlurmctldPort={self.ports["slurmctld"]}
SlurmdPort={self.ports["slurmd"]}
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
{accounting}JobCompType=jobcomp/none
# finished jobs stay visible to squeue for 10 min (the plugin's squeue status mode needs that)
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=localhost CPUs={self.cpus} RealMemory={self.memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        )
        self.conf.chmod(0o644)
        _ = etc

    def _start_slurmdbd(self) -> None:
        log = self.root / "log"
        dbd_conf = self.conf.parent / "slurmdbd.conf"  # slurmdbd reads it beside $SLURM_CONF
        dbd_conf.write_text(
            f"""AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdPort={self.ports["slurmdbd"]}
SlurmUser=slurm
LogFile={log}/slurmdbd.log
PidFile={log}/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mariadb"]}
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmdbpass
"""
        )
        shutil.chown(dbd_conf, "slurm", "slurm")
        dbd_conf.chmod(0o600)
        self._check_call(_which("slurmdbd"))
        pid_file = log / "slurmdbd.pid"
        _wait(
            lambda: _read_pid(pid_file) is not None and _port_open(self.ports["slurmdbd"]),
            60, "slurmdbd", log / "slurmdbd.log",
        )  # fmt: skip
        self.pids["slurmdbd"] = _read_pid(pid_file)
        # cluster, account and user must exist before slurmctld registers
        for args in (
            ("add", "cluster", CLUSTER_NAME),
            ("add", "account", ACCOUNT, f"Cluster={CLUSTER_NAME}", "Description=sccohort tests"),
            ("add", "user", pwd.getpwuid(os.geteuid()).pw_name, f"DefaultAccount={ACCOUNT}"),
        ):
            self.run("sacctmgr", "-i", *args, check=False)

    def _start_slurmctld(self) -> None:
        log = self.root / "log"
        self._check_call(_which("slurmctld"), "-f", str(self.conf))
        _wait(
            lambda: "UP" in self.run("scontrol", "ping", check=False).stdout,
            60,
            "slurmctld",
            log / "slurmctld.log",
        )
        _wait(lambda: _read_pid(log / "slurmctld.pid") is not None, 10, "slurmctld's PID file")
        self.pids["slurmctld"] = _read_pid(log / "slurmctld.pid")

    def _start_slurmd(self) -> None:
        log = self.root / "log"
        self._check_call(_which("slurmd"), "-f", str(self.conf), "-N", "localhost")
        _wait(lambda: _read_pid(log / "slurmd.pid") is not None, 20, "slurmd's PID file", log / "slurmd.log")
        self.pids["slurmd"] = _read_pid(log / "slurmd.pid")

        def node_up():
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
            if state.startswith(("down", "drain")):
                self.run("scontrol", "update", "NodeName=localhost", "State=RESUME", check=False)
            return state.startswith(("idle", "mixed", "allocated"))

        _wait(node_up, 60, "node localhost to become idle", log / "slurmd.log", interval=0.5)

    def _check_call(self, *command: str, timeout: float = 60) -> None:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"SLURM test cluster: `{' '.join(command)}` failed (exit {result.returncode}): "
                f"{result.stderr.strip() or result.stdout.strip()}"
            )

    # ------------------------------------------------------------------ use
    def sacct(self, *fields: str, since: str = "now-1days") -> list[dict[str, str]]:
        """Accounting records of all jobs (allocations only, -X) since `since`."""
        result = self.run(
            "sacct", "-X", "--parsable2", "--noheader", "--allusers", "--starttime", since,
            "--format=" + ",".join(fields),
        )  # fmt: skip
        return [
            dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines() if line
        ]

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path}\n" + "\n".join(text))
        return "\n".join(out)

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        """Cancel this cluster's jobs, then end every daemon started here, newest first, by PID."""
        if "slurmctld" in self.pids and _alive(self.pids["slurmctld"]):
            try:
                self.run("scancel", "--user", pwd.getpwuid(os.geteuid()).pw_name, check=False, timeout=20)
                active = ("squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING")
                _wait(lambda: not self.run(*active, check=False).stdout.strip(), 30, "cancelled jobs to end")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        # a daemon that started but failed a readiness check is only known by its PID file
        for name, comm, pid_file in (
            ("munged", "munged", self.root / "munge" / "munged.pid"),
            ("mariadb", "mariadbd", self.root / "mysql" / "mysqld.pid"),
            ("slurmdbd", "slurmdbd", self.root / "log" / "slurmdbd.pid"),
            ("slurmctld", "slurmctld", self.root / "log" / "slurmctld.pid"),
            ("slurmd", "slurmd", self.root / "log" / "slurmd.pid"),
        ):
            pid = _read_pid(pid_file)
            if name not in self.pids and pid is not None and _alive(pid) and _comm(pid) == comm:
                self.pids[name] = pid
        for name in reversed(list(self.pids)):
            pid = self.pids.pop(name)
            if pid is None or not _alive(pid):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
            # reap children of ours (runuser of mariadbd) so they do not linger as zombies
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def running_daemons(self) -> dict[str, int]:
        return {name: pid for name, pid in self.pids.items() if pid and _alive(pid)}

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
