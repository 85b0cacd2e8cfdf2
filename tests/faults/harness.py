"""Multi-host fault harness for minishard: a private network namespace, one
`minishard node --json` process per loopback address inside it, iptables
link control, a userspace delay proxy, and an event collector.

How the namespace is laid out:

* `ip netns add msfaults-<pid>`; this process then enters it with setns(2)
  before it starts any thread, so every node, every iptables call and the
  proxy live in it. Nothing is ever sent from the host's own namespace.
* Node i listens on 127.0.0.(11+i):7000 and runs as its own uid (40011+i).
  A node dials from the address it listens on, so every connection carries
  both nodes' addresses in its conntrack tuples. (The harness once made
  that so with SNAT from an unbound 127.0.0.1 socket; a connection whose
  first packet met a stale conntrack entry of an earlier node's connection
  on the same 127.0.0.1 port took that node's address, and no cut matched
  it: a "split" left one link up.)
* Every node reads its member list from its own file (`--members-file`,
  re-read every `member_poll` ms), so a scenario can change one node's
  list while it runs (`Cluster.set_members`).
* Faults are filter rules in the INPUT chain (a packet dropped on the way
  in is lost "on the wire"; dropping in OUTPUT would hand the sender an
  EPERM instead). Their packet counters are read before every heal
  (`Cluster.drops`), so a scenario can show that a cut or a loss really
  dropped something. "A's packets do not reach B" is two rules matching the
  conntrack tuple: connections A dialled (`--ctreplsrc B --ctrepldst A
  --ctdir ORIGINAL`) and connections B dialled (`--ctreplsrc A --ctrepldst B
  --ctdir REPLY`). Loss adds `-m statistic --mode random --probability P`.
* Delay: the kernel has no netem, so when a cluster is started with
  `proxy=True` a nat OUTPUT rule sends every node's connection to node j
  (`-m owner --uid-owner 40000-40999 -d 127.0.0.j --dport 7000`) to a
  userspace proxy on 127.0.0.1:(27000+j). The proxy connects on to the real
  node from the dialler's own address, and holds every chunk for
  delay +/- jitter (order kept). The delay can be changed while it runs;
  it is zero until asked. Cuts still apply: the proxy's onward connection
  carries the two nodes' addresses.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PORT = 7000
PROXY_BASE = 27000
# Every node sends a request to each shard in turn this often, and prints
# each one's outcome (`minishard node --request-load-ms`): checks.py's
# check_requests reads them.
REQUEST_LOAD_MS = 20
UID_BASE = 40000
COOKIE = "minishard-fault-tests"

REPO = Path(__file__).resolve().parents[2]


def now_ms() -> float:
    """Unix ms, whole like the nodes' `t`, so that marks and events compare
    at the same resolution."""
    return float(int(time.time() * 1000.0))


class Skip(Exception):
    """The machine cannot run these tests (no root, no ip netns, ...)."""


def sh(*args: str, check: bool = True, quiet: bool = False) -> subprocess.CompletedProcess:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(args)}\n{r.stderr.strip()}")
    return r


# ---------------------------------------------------------------- prerequisites

def ensure_tools(ci: bool) -> str:
    """Returns the iptables command to use, installing iptables when missing."""
    if os.geteuid() != 0:
        raise Skip("not root: network namespaces and iptables need root")
    for tool in ("ip",):
        if not _which(tool):
            raise Skip(f"`{tool}` is missing (iproute2)")
    if not (_which("iptables") or _which("iptables-legacy")):
        print("faults: iptables is missing; installing it with apt-get", flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "iptables"], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise Skip(f"cannot install iptables: {r.stderr.strip()[-300:]}")
    return _pick_iptables()


def _which(tool: str) -> Optional[str]:
    from shutil import which
    return which(tool)


def _pick_iptables() -> str:
    """The first iptables flavour that can do everything the harness needs,
    tried inside a throwaway namespace."""
    candidates = [c for c in ("iptables", "iptables-nft", "iptables-legacy") if _which(c)]
    probe = f"msfaults-probe-{os.getpid()}"
    r = sh("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        raise Skip(f"cannot create a network namespace (ip netns add): {r.stderr.strip()}")
    try:
        errors = []
        for cmd in candidates:
            rules = [
                ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "127.0.0.12", "--dport", "7000",
                 "-m", "owner", "--uid-owner", "40000-40999", "-j", "DNAT",
                 "--to-destination", "127.0.0.1:27012"],
                ["-A", "INPUT", "-m", "conntrack", "--ctreplsrc", "127.0.0.12", "--ctrepldst",
                 "127.0.0.11", "--ctdir", "ORIGINAL", "-m", "statistic", "--mode", "random",
                 "--probability", "0.2", "-j", "DROP"],
            ]
            ok = True
            for rule in rules:
                r = sh("ip", "netns", "exec", probe, cmd, "-w", *rule, check=False)
                if r.returncode != 0:
                    errors.append(f"{cmd}: {r.stderr.strip()}")
                    ok = False
                    break
            if ok:
                return cmd
        raise Skip("no iptables flavour works here: " + "; ".join(errors))
    finally:
        sh("ip", "netns", "del", probe, check=False)


# ---------------------------------------------------------------- namespace

class Namespace:
    """A network namespace this process lives in from `enter` on.

    Only one per process (setns moves the whole harness into it). `close`
    deletes it; it is also deleted on SIGTERM/SIGINT and at exit."""

    def __init__(self, iptables: str, name: Optional[str] = None):
        self.name = name or f"msfaults-{os.getpid()}"
        self.iptables = iptables
        self.addresses: list[str] = []
        self._host_fd: Optional[int] = None

    def enter(self) -> "Namespace":
        sweep_stale_namespaces()
        sh("ip", "netns", "add", self.name)
        libc = ctypes.CDLL(None, use_errno=True)
        self._host_fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                sh("ip", "netns", "del", self.name, check=False)
                raise Skip(f"setns into {self.name} failed: {os.strerror(err)}")
        finally:
            os.close(fd)
        sh("ip", "link", "set", "lo", "up")
        # Connection tracking of loopback traffic is what the rules match on;
        # a tighter timeout keeps dead entries of a killed node short-lived.
        return self

    def add_address(self, ip: str) -> None:
        if ip not in self.addresses:
            sh("ip", "addr", "add", f"{ip}/8", "dev", "lo")
            self.addresses.append(ip)

    def ipt(self, *args: str) -> None:
        sh(self.iptables, "-w", *args)

    def ipt_restore(self, lines: list[str]) -> None:
        """Applies several rules in one transaction (iptables-restore)."""
        restore = self.iptables.replace("iptables", "iptables-restore")
        text = "\n".join(lines) + "\n"
        r = subprocess.run([restore, "-w", "--noflush"], input=text, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"{restore} failed: {r.stderr.strip()}\n{text}")

    def close(self) -> None:
        if self._host_fd is not None:
            # Step back into the host namespace so deleting ours drops it.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.setns(self._host_fd, CLONE_NEWNET)
            os.close(self._host_fd)
            self._host_fd = None
        sh("ip", "netns", "del", self.name, check=False)


def sweep_stale_namespaces() -> None:
    """Deletes namespaces left by a harness run that died (its pid is gone)."""
    r = sh("ip", "netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith("msfaults-"):
            pid = name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                sh("ip", "netns", "del", name, check=False)


# ---------------------------------------------------------------- events

@dataclass
class Ev:
    t: float            # the node's unix ms (or the harness's, for marks)
    node: str           # address
    proc: str           # address#start (one process lifetime)
    event: str
    data: dict
    seq: int            # global arrival order


class EventLog:
    """Every event of every node, plus the harness's own marks."""

    def __init__(self) -> None:
        self.events: list[Ev] = []
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.errors: list[str] = []
        self._seq = 0

    def add(self, t: float, node: str, proc: str, event: str, data: dict) -> None:
        with self.lock:
            self._seq += 1
            self.events.append(Ev(t, node, proc, event, data, self._seq))
            self.changed.notify_all()

    def mark(self, what: str, at: Optional[float] = None, **data) -> float:
        t = now_ms() if at is None else at
        self.add(t, "harness", "harness", "mark", dict(data, what=what))
        return t

    def snapshot(self) -> list[Ev]:
        with self.lock:
            return list(self.events)

    def wait(self, what: str, timeout_s: float, cond: Callable[[list[Ev]], bool]) -> float:
        """Waits until cond(events) holds; returns the harness time (ms) it did."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while True:
                if cond(self.events):
                    return now_ms()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout_s:.1f}s waiting for: {what}")
                self.changed.wait(min(left, 0.05))


# ---------------------------------------------------------------- nodes

@dataclass
class Timing:
    hb_interval: int = 100
    hb_timeout: int = 500
    transition: int = 1000
    grace: int = 1500
    settle: int = 20
    # Shorter than the default member_poll of 5 s: a scenario that changes a member list
    # waits for every node to have read it.
    member_poll: int = 1000

    def args(self) -> list[str]:
        return ["--heartbeat-interval-ms", str(self.hb_interval),
                "--heartbeat-timeout-ms", str(self.hb_timeout),
                "--transition-timeout-ms", str(self.transition),
                "--node-grace-ms", str(self.grace),
                "--settle-ms", str(self.settle),
                "--member-poll-ms", str(self.member_poll)]

    @property
    def converge_ms(self) -> int:
        """docs/design.md 7.1: heartbeat_timeout + node_grace + 100 ms."""
        return self.hb_timeout + self.grace + 100

    @property
    def degrade_ms(self) -> int:
        """docs/design.md 7.2: heartbeat_timeout + transition_timeout + 100 ms."""
        return self.hb_timeout + self.transition + 100


DEFAULT = Timing()
# The default timings' proportions, halved: interval < timeout < transition < grace.
FAST = Timing(hb_interval=50, hb_timeout=250, transition=500, grace=750, settle=20)


@dataclass
class Node:
    index: int
    ip: str
    uid: int
    score: str = "uptime"
    proc: Optional[subprocess.Popen] = None
    proc_id: str = ""
    starts: int = 0
    stopped_how: dict = field(default_factory=dict)   # proc_id -> "term" | "kill"
    exit_codes: dict = field(default_factory=dict)    # proc_id -> code

    @property
    def addr(self) -> str:
        return f"{self.ip}:{PORT}"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def parse_counters(listing: str) -> list[int]:
    """The packet counter of each rule, in order, from `iptables -L CHAIN
    -n -v -x` (a chain header line, a column header line, then one line per
    rule starting with its packet count)."""
    lines = listing.splitlines()
    if len(lines) < 2 or not lines[0].startswith("Chain ") or not lines[1].split()[:1] == ["pkts"]:
        raise RuntimeError(f"unexpected iptables listing:\n{listing}")
    return [int(line.split()[0]) for line in lines[2:] if line.strip()]


# A fault rule: what node a sends is dropped on its way to node b.
Rule = tuple[int, int, tuple[str, ...]]


class Cluster:
    """n nodes in the namespace, keeping `shards` shards."""

    def __init__(self, ns: Namespace, log: EventLog, n: int, shards: int, timing: Timing,
                 name: str = "faults", scores: Optional[list[str]] = None, proxy: bool = False,
                 logdir: Optional[Path] = None, binary: Optional[Path] = None,
                 quorum: Optional[str] = None, handler: str = "echo"):
        self.ns, self.log, self.shards, self.timing, self.name = ns, log, shards, timing, name
        # `--handler`: echo, or kv (a key-value store per shard that moves
        # with the shard on a leave or a conflict).
        self.handler = handler
        # `--quorum`: "majority" for strict mode; None keeps the default.
        self.quorum = quorum
        self.binary = binary or REPO / "target" / "release" / "minishard"
        self.logdir = logdir
        self.nodes = [Node(i, f"127.0.0.{11 + i}", UID_BASE + 11 + i,
                           (scores[i] if scores else "uptime")) for i in range(n)]
        self.rules: list[Rule] = []   # fault rules now in force, in chain order
        # Packets each direction's rules dropped, summed over every fault
        # healed so far: (a, b) -> packets a sent that b never got.
        self.dropped: dict[tuple[int, int], int] = {}
        self.proxy: Optional[DelayProxy] = None
        self._readers: list[threading.Thread] = []
        for node in self.nodes:
            ns.add_address(node.ip)
        # Readable by the nodes' own uids; each file is replaced whole.
        self.member_dir = Path(tempfile.mkdtemp(prefix="minishard-members-"))
        self.member_dir.chmod(0o755)
        self.member_lists: list[list[str]] = []
        for node in self.nodes:
            self.member_lists.append([])
            self._write_members(node.index, [n.addr for n in self.nodes])
        ns.ipt("-t", "nat", "-F", "OUTPUT")
        ns.ipt("-F", "INPUT")
        ns.ipt("-N", "MSFAULT") if not self._chain_exists() else ns.ipt("-F", "MSFAULT")
        ns.ipt("-A", "INPUT", "-j", "MSFAULT")
        if proxy:
            self.proxy = DelayProxy({PROXY_BASE + 11 + n.index: n.addr for n in self.nodes})
            self.proxy.start()
            for node in self.nodes:
                ns.ipt("-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", node.ip, "--dport", str(PORT),
                       "-m", "owner", "--uid-owner", f"{UID_BASE}-{UID_BASE + 999}",
                       "-j", "DNAT", "--to-destination", f"127.0.0.1:{PROXY_BASE + 11 + node.index}")

    def _chain_exists(self) -> bool:
        return sh(self.ns.iptables, "-w", "-L", "MSFAULT", "-n", check=False, quiet=True).returncode == 0

    # -- processes

    def members_file(self, i: int) -> Path:
        return self.member_dir / f"members-{self.nodes[i].ip}"

    def _write_members(self, i: int, addrs: list[str]) -> None:
        path = self.members_file(i)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(addrs) + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, path)
        self.member_lists[i] = list(addrs)

    def set_members(self, i: int, addrs: list[str]) -> float:
        """Node i's `nodes` callback answers `addrs` from its next poll on
        (it prints a `members` event when it does)."""
        self._write_members(i, addrs)
        return self.log.mark("set_members", node=self.nodes[i].addr, nodes=list(addrs))

    def start(self, i: int) -> None:
        node = self.nodes[i]
        assert not node.running(), f"{node.addr} is already running"
        node.starts += 1
        node.proc_id = f"{node.addr}#{node.starts}"
        uid = node.uid
        stderr = subprocess.DEVNULL
        if self.logdir:
            stderr = open(self.logdir / f"{node.ip}.{node.starts}.stderr", "wb")

        def become_node() -> None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            # Die with the harness, whatever kills it (set after setuid,
            # which would clear it).
            ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MINISHARD_COOKIE": COOKIE,
               "RUST_LOG": os.environ.get("FAULTS_RUST_LOG", "minishard=info")}
        args = [str(self.binary), "node", "--cluster", self.name, "--listen", node.addr,
                "--members-file", str(self.members_file(i)), "--shards", str(self.shards), "--json",
                "--score", node.score, *self.timing.args(),
                "--handler", self.handler, "--request-load-ms", str(REQUEST_LOAD_MS),
                # A member removed from the list stays up as the scenarios
                # need (it would exit after 5 s of refusals by default).
                "--refused-exit-after-ms", "0",
                *(["--quorum", self.quorum] if self.quorum else [])]
        self.log.mark("start", node=node.addr, proc=node.proc_id)
        node.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, env=env,
                                     cwd="/", preexec_fn=become_node, close_fds=True)
        if stderr is not subprocess.DEVNULL:
            stderr.close()
        t = threading.Thread(target=self._read, args=(node, node.proc, node.proc_id), daemon=True)
        t.start()
        self._readers.append(t)

    def request(self, via: int, shard: int, data: str, timeout_ms: int = 5000) -> dict:
        """`minishard request` through node `via` to the owner of `shard`:
        its JSON answer (`reply`, `node`, `epoch`, or `error`, `message`)."""
        args = [str(self.binary), "request", "--cluster", self.name, "--connect", self.nodes[via].addr,
                "--shard", str(shard), "--json", "--timeout-ms", str(timeout_ms),
                *self.timing.args(), data]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MINISHARD_COOKIE": COOKIE,
               "RUST_LOG": "minishard=warn"}
        r = subprocess.run(args, capture_output=True, text=True, env=env, cwd="/",
                           timeout=timeout_ms / 1000 + 15)
        self.log.mark("request", node=self.nodes[via].addr, shard=shard, data=data, out=r.stdout.strip())
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            return {"error": "no answer", "message": f"exit {r.returncode}: {r.stderr.strip()[-300:]}"}

    def _read(self, node: Node, proc: subprocess.Popen, proc_id: str) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
                t, ev, who = obj.pop("t"), obj.pop("event"), obj.pop("node")
            except (ValueError, KeyError) as e:
                self.log.errors.append(f"{proc_id}: not one JSON object per line ({e}): {line!r}")
                continue
            if who != node.addr:
                self.log.errors.append(f"{proc_id}: event names node {who}, expected {node.addr}")
            self.log.add(float(t), node.addr, proc_id, ev, obj)
        code = proc.wait()
        self.log.add(now_ms(), node.addr, proc_id, "exit", {"code": code})

    def start_all(self) -> None:
        for i in range(len(self.nodes)):
            self.start(i)

    def kill9(self, i: int) -> float:
        node = self.nodes[i]
        assert node.proc is not None
        node.stopped_how[node.proc_id] = "kill"
        node.proc.send_signal(signal.SIGKILL)
        t = self.log.mark("kill9", node=node.addr, proc=node.proc_id)
        node.proc.wait()
        return t

    def term(self, i: int, wait: bool = True) -> float:
        node = self.nodes[i]
        assert node.proc is not None
        node.stopped_how[node.proc_id] = "term"
        t = self.log.mark("sigterm", node=node.addr, proc=node.proc_id)
        node.proc.send_signal(signal.SIGTERM)
        if wait:
            self.wait_exit(i)
        return t

    def wait_exit(self, i: int, timeout_s: float = 15.0) -> None:
        node = self.nodes[i]
        assert node.proc is not None
        try:
            code = node.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            node.proc.kill()
            node.proc.wait()
            code = "hung"
        node.exit_codes[node.proc_id] = code
        pid = node.proc_id
        self.log.wait(f"{pid} exit seen", 5, lambda evs: any(e.proc == pid and e.event == "exit" for e in evs))

    def stop_all(self) -> None:
        """SIGTERM every running node at once, and wait for them."""
        running = [n.index for n in self.nodes if n.running()]
        for i in running:
            self.term(i, wait=False)
        for i in running:
            self.wait_exit(i)

    def close(self) -> None:
        """Kills whatever still runs (after a failure) and stops the proxy."""
        for n in self.nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
                n.proc.wait()
        for t in self._readers:
            t.join(timeout=2)
        if self.proxy:
            self.proxy.stop()
        shutil.rmtree(self.member_dir, ignore_errors=True)

    # -- links

    def _pair_rules(self, a: int, b: int, extra: tuple[str, ...] = ()) -> list[Rule]:
        """Rules dropping what node a sends to node b."""
        A, B = self.nodes[a].ip, self.nodes[b].ip
        return [(a, b, ("-m", "conntrack", "--ctreplsrc", B, "--ctrepldst", A, "--ctdir", "ORIGINAL", *extra)),
                (a, b, ("-m", "conntrack", "--ctreplsrc", A, "--ctrepldst", B, "--ctdir", "REPLY", *extra))]

    def _apply(self, add: list[Rule], what: str, **data) -> float:
        lines = ["*filter"] + [" ".join(("-A", "MSFAULT", *r, "-j", "DROP")) for (_, _, r) in add] + ["COMMIT"]
        self.ns.ipt_restore(lines)
        self.rules.extend(add)
        return self.log.mark(what, **data)

    def drops(self) -> dict[tuple[int, int], int]:
        """Packets dropped so far by the rules in force, per direction
        (a, b): what a sent that b never got."""
        r = sh(self.ns.iptables, "-w", "-L", "MSFAULT", "-n", "-v", "-x")
        counts = parse_counters(r.stdout)
        if len(counts) != len(self.rules):
            raise RuntimeError(f"MSFAULT holds {len(counts)} rules, the harness put {len(self.rules)}")
        out: dict[tuple[int, int], int] = {}
        for (a, b, _), n in zip(self.rules, counts):
            out[(a, b)] = out.get((a, b), 0) + n
        return out

    def cut_oneway(self, a: int, b: int) -> float:
        """What a sends no longer reaches b (b does not hear a)."""
        return self._apply(self._pair_rules(a, b), "cut_oneway",
                           src=self.nodes[a].addr, dst=self.nodes[b].addr)

    def cut(self, group_a: list[int], group_b: list[int]) -> float:
        """Every link between the two groups, both ways."""
        rules = []
        for a in group_a:
            for b in group_b:
                rules += self._pair_rules(a, b) + self._pair_rules(b, a)
        return self._apply(rules, "cut", a=[self.nodes[i].addr for i in group_a],
                           b=[self.nodes[i].addr for i in group_b])

    def cut_links(self, pairs: list[tuple[int, int]]) -> float:
        """These links (a, b), both ways; every other link stays as it is."""
        rules = []
        for (a, b) in pairs:
            rules += self._pair_rules(a, b) + self._pair_rules(b, a)
        return self._apply(rules, "cut_links", links=[[self.nodes[a].addr, self.nodes[b].addr] for (a, b) in pairs])

    def split(self, *groups: list[int]) -> float:
        """A full split into these groups."""
        rules = []
        for gi, ga in enumerate(groups):
            for gb in groups[gi + 1:]:
                for a in ga:
                    for b in gb:
                        rules += self._pair_rules(a, b) + self._pair_rules(b, a)
        return self._apply(rules, "split", groups=[[self.nodes[i].addr for i in g] for g in groups])

    def loss(self, p: float, nodes: Optional[list[int]] = None) -> float:
        """Random loss of probability p on every link among `nodes` (all), both ways."""
        idx = nodes if nodes is not None else list(range(len(self.nodes)))
        extra = ("-m", "statistic", "--mode", "random", "--probability", f"{p:.4f}")
        rules = []
        for a in idx:
            for b in idx:
                if a != b:
                    rules += self._pair_rules(a, b, extra)
        return self._apply(rules, "loss", p=p, nodes=[self.nodes[i].addr for i in idx])

    def heal(self) -> float:
        """Removes every fault rule (and any proxy delay). The time returned
        is from before the first rule goes: with fast timings a conflict can
        be resolved before the command that heals has returned."""
        started = now_ms()
        # Flushing resets the counters: read them first.
        dropped = self.drops() if self.rules else {}
        self.ns.ipt("-F", "MSFAULT")
        self.rules.clear()
        for pair, n in dropped.items():
            self.dropped[pair] = self.dropped.get(pair, 0) + n
        if self.proxy:
            self.proxy.set_delay(0, 0)
        return self.log.mark("heal", at=started,
                             dropped={f"{self.nodes[a].addr}>{self.nodes[b].addr}": n
                                      for (a, b), n in dropped.items()})

    def delay(self, ms: float, jitter_ms: float) -> float:
        assert self.proxy is not None, "start the cluster with proxy=True to delay"
        self.proxy.set_delay(ms, jitter_ms)
        return self.log.mark("delay", ms=ms, jitter=jitter_ms)


# ---------------------------------------------------------------- delay proxy

class DelayProxy:
    """A TCP proxy in its own thread (asyncio): listens on 127.0.0.1:port
    for each target, connects on from the client's own address, and holds
    every chunk for delay +/- jitter, keeping the byte order."""

    def __init__(self, targets: dict[int, str]):
        self.targets = targets
        self.delay_ms = 0.0
        self.jitter_ms = 0.0
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="delay-proxy")
        self.ready = threading.Event()
        self.error: Optional[BaseException] = None
        self.connections = 0
        self.delayed_chunks = 0   # chunks held back by a non-zero delay

    def set_delay(self, ms: float, jitter_ms: float) -> None:
        self.delay_ms, self.jitter_ms = ms, jitter_ms

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)
        if self.error:
            raise RuntimeError(f"delay proxy did not start: {self.error}")

    def stop(self) -> None:
        if self.loop:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        try:
            servers = []
            for port, target in self.targets.items():
                host, tport = target.rsplit(":", 1)
                srv = self.loop.run_until_complete(asyncio.start_server(
                    lambda r, w, h=host, p=int(tport): self._serve(r, w, h, p),
                    "127.0.0.1", port, reuse_address=True))
                servers.append(srv)
        except BaseException as e:  # noqa: BLE001 - reported to the starter
            self.error = e
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()
        for s in servers:
            s.close()

    async def _serve(self, reader, writer, host: str, port: int) -> None:
        client_ip = writer.get_extra_info("peername")[0]
        try:
            up_r, up_w = await asyncio.open_connection(host, port, local_addr=(client_ip, 0))
        except OSError:
            writer.close()
            return
        self.connections += 1
        await asyncio.gather(self._pipe(reader, up_w), self._pipe(up_r, writer),
                             return_exceptions=True)

    async def _pipe(self, reader, writer) -> None:
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                if data is None:
                    break
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        last = 0.0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                d = self.delay_ms + random.uniform(-self.jitter_ms, self.jitter_ms)
                if d > 0:
                    self.delayed_chunks += 1
                last = max(last, loop.time() + max(d, 0.0) / 1000.0)
                queue.put_nowait((last, data))
        except OSError:
            pass
        finally:
            queue.put_nowait((0.0, None))
            try:
                await sender
            except OSError:
                pass
            try:
                writer.close()
            except OSError:
                pass
