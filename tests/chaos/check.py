#!/usr/bin/env python3
"""Judges a chaos run (run.py) from what it left in --out: the target's log
(target.jsonl), the faults log (faults.jsonl), run.json, and each instance's
SQLite database and stderr.

Prints, per guarantee of DESIGN §1 (G1..G7), plus the convergence of the
histories and the explanation of every expected slot, each check with its
count of violations and a few examples; writes the full lists to
violations.json, the outcome of every expected slot on every instance to
slots.tsv and this report to report.txt. Exit status 1 when any check has a
violation, 0 otherwise; the closing line reads "N passed, M failed".

    python3 tests/chaos/check.py --out build-asan/chaos
"""

import argparse
import bisect
import collections
import datetime
import json
import pathlib
import re
import sqlite3
import sys

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")
# A delivery breaks G5 when its claim cannot have been made before a quorum was lost: the
# slot's instant (less G2_CLAIM_EARLY_MS, for a clock running ahead) came this long after
# 2 of 3 nodes stopped counting, and it arrived before they were back. How late it arrives
# says nothing: a claim committed with a quorum may deliver late (a paused instance, a slow
# target), which fencing, not G5, covers.
G5_MARGIN_S = 0.2
# How far before its slot a claim may start in real time: an instance whose clock runs
# 0.5 s ahead (the instance-skew fault) claims early; the rest is slack.
G2_CLAIM_EARLY_MS = 1000
# Statuses of a slot that was claimed and delivered (or tried to be): they carry a token.
DELIVERED = ("succeeded", "failed", "fenced", "lost")
FINAL = ("succeeded", "failed", "fenced", "lost", "skipped", "missed")
SLOT_ID = re.compile(r"^(?P<job>[^@]+)@(?P<ms>\d+)$")
SUMMARY_ID = re.compile(r"^(?P<job>[^@]+)@(?P<first>\d+)-(?P<last>\d+)$")


def ms_of(text):
    """RFC 3339 UTC with milliseconds -> Unix ms (None when it is not one)."""
    try:
        moment = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError):
        return None
    return int(moment.replace(tzinfo=datetime.timezone.utc).timestamp() * 1000 + 0.5)


def iso(value_ms):
    moment = datetime.datetime.fromtimestamp(value_ms / 1000, tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value_ms % 1000:03d}Z"


def read_jsonl(path, problems):
    """The objects of a JSON-lines file; a torn line is reported, not fatal."""
    items = []
    if not path.exists():
        problems.append(f"{path.name} is missing")
        return items
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            line = line.strip()
            if not line:
                continue
            try:
                items.append(json.loads(line))
            except ValueError:
                problems.append(f"{path.name}:{number} is not JSON")
    return items


class Report:
    """Checks and their violations, printed as one table."""

    def __init__(self, examples):
        self.rows = []  # (guarantee, name, description, violations)
        self.examples = examples
        self.notes = []

    def add(self, guarantee, name, description, violations):
        self.rows.append((guarantee, name, description, list(violations)))

    def note(self, text):
        self.notes.append(text)

    def failed(self):
        return sum(1 for row in self.rows if row[3])

    def render(self):
        lines = []
        width = max(len(f"{g} {n}") for g, n, _, _ in self.rows)
        totals = collections.Counter()
        for guarantee, name, description, violations in self.rows:
            totals[guarantee] += len(violations)
            mark = "FAIL" if violations else "ok"
            lines.append(f"{guarantee + ' ' + name:<{width}}  {mark:>4}  {len(violations):>6}  "
                         f"{description}")
            for example in violations[:self.examples]:
                lines.append(f"{'':<{width}}              e.g. {example}")
            if len(violations) > self.examples:
                lines.append(f"{'':<{width}}              ... and {len(violations) - self.examples}"
                             " more (violations.json)")
        lines.append("")
        lines.append("violations per guarantee: " + ", ".join(
            f"{guarantee} {count}" for guarantee, count in totals.items()))
        lines.append(f"total violations: {sum(totals.values())}")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        # The failures again, last: a log read from its tail still says what failed.
        for guarantee, name, _, violations in self.rows:
            if violations:
                lines.append(f"FAILED {guarantee} {name}: {violations[0]}"
                             + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""))
        lines.append("")
        passed, failed = len(self.rows) - self.failed(), self.failed()
        lines.append(f"{passed} passed, {failed} failed")
        return "\n".join(lines)


class Run:
    """Everything a chaos run left in its folder, read once."""

    def __init__(self, out):
        self.out = out
        self.problems = []
        self.meta = json.loads((out / "run.json").read_text())
        self.requests = read_jsonl(out / "target.jsonl", self.problems)
        self.events = read_jsonl(out / "faults.jsonl", self.problems)
        self.jobs = {job["name"]: job for job in self.meta.get("jobs", [])}
        self.instances = [i["name"] for i in self.meta.get("instances", [])]
        self.rows = {}  # instance -> {run id -> row}
        self.summaries = {}  # instance -> {job -> sorted [(first, last, row)]}
        self.integrity = {}
        for info in self.meta.get("instances", []):
            self.load_db(info["name"], out / info["db"])
        for request in self.requests:
            request["slot_ms"] = ms_of(request.get("scheduled_at"))

    def load_db(self, name, path):
        rows, summaries = {}, collections.defaultdict(list)
        if not path.exists():
            self.integrity[name] = f"{path.name} is missing"
            self.rows[name], self.summaries[name] = rows, summaries
            return
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            self.integrity[name] = "ok" if result == ["ok"] else "; ".join(result[:5])
            for row in conn.execute(
                    "SELECT id, job, trigger, scheduled_at, status, reason, fencing_token,"
                    " instance, attempts, started_at, finished_at, lease_lost FROM runs"):
                row = dict(row)
                rows[row["id"]] = row
                summary = SUMMARY_ID.match(row["id"])
                if summary:
                    summaries[summary["job"]].append(
                        (int(summary["first"]), int(summary["last"]), row))
        except sqlite3.Error as error:
            self.integrity[name] = f"cannot read: {error}"
        finally:
            conn.close()
        for ranges in summaries.values():
            ranges.sort(key=lambda item: item[0])
        self.rows[name], self.summaries[name] = rows, summaries

    def summary_covering(self, instance, job, slot_ms):
        """The missed summary row of instance that counts slot_ms of job, or None. (Every
        job here fires every second, so a summary counts every whole second it spans.)"""
        for first, last, row in self.summaries[instance].get(job, ()):
            if first <= slot_ms <= last:
                return row
        return None

    def window(self, job):
        """The whole seconds of job's slots that must be explained: from its creation to the
        end of the fault phase, less the margin at both ends; and none whose starting
        deadline (a queued slot waits that long) had not passed when the jobs were paused."""
        margin = self.meta["margin_ms"]
        first = -(-(self.jobs[job]["created_at_ms"] + margin) // 1000) * 1000
        last = self.meta.get("faults_end_wall", 0) - margin
        if "pause_start_wall" in self.meta:
            last = min(last, self.meta["pause_start_wall"] -
                       self.meta.get("queue_deadline_ms", 0) - 1000)
        return range(first, last + 1, 1000)


# ---------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------

def signed(requests):
    """The requests a cronfence instance sent with a valid signature: its deliveries."""
    return [r for r in requests if r.get("sig_ok") and r.get("token") is not None]


def check_sanity(run, report):
    meta = run.meta
    problems = list(meta.get("problems", [])) + run.problems
    if not meta.get("completed"):
        problems.append("the run did not complete")
    faults = [e for e in run.events if e["event"] == "fault"]
    # Every tick of the fault phase injects a fault, except those a slow fault ran over
    # (a loaded machine stretches restarts); a run with fewer faults is a harness defect.
    planned = int(meta.get("minutes", 0) * 60 // meta.get("interval_s", 10)) - 1
    expected = planned - meta.get("ticks_overrun", 0)
    if expected > 0 and len(faults) < expected:
        problems.append(f"only {len(faults)} faults injected, {expected} planned "
                        f"({planned} ticks, {planned - expected} overrun by slow faults)")
    problems += [f"fault {f['fault']} failed: {f.get('error')}" for f in faults if not f.get("ok")]
    if not meta.get("healed", {}).get("ok"):
        problems.append(f"the cluster did not heal: {meta.get('healed')}")
    applied = collections.Counter(r["job"] for r in run.requests if r.get("decision") == "applied")
    never = [job for job in run.jobs if applied[job] == 0]
    if never:
        problems.append(f"{len(never)} jobs never delivered, e.g. {never[:5]}")
    if not any(len(run.window(job)) for job in run.jobs):
        problems.append("no slot lies in the checked window (run longer than 2 margins)")
    report.add("run", "harness", "the run went as planned: faults injected, cluster healed, "
               "every job delivered", problems)


def check_g1(run, report):
    tokens = collections.defaultdict(dict)  # key -> token -> instances
    applied = collections.Counter()
    for r in signed(run.requests):
        tokens[r["key"]].setdefault(r["token"], set()).add(r.get("instance"))
        if r.get("decision") == "applied":
            applied[r["key"]] += 1
    twice = [f"{key}: tokens " + ", ".join(f"{t} from {sorted(map(str, i))}"
                                           for t, i in sorted(by.items()))
             for key, by in tokens.items() if len(by) > 1]
    report.add("G1", "one claim per slot", "no slot (idempotency key) delivered under two "
               "different fencing tokens", twice)
    report.add("G1", "applied once", "the target applied no idempotency key twice",
               [f"{key} applied {count} times" for key, count in applied.items() if count > 1])


def check_g2(run, report):
    deliveries = signed(run.requests)
    # Unique tokens: per job, one token never names two slots (target and histories).
    slots = collections.defaultdict(lambda: collections.defaultdict(set))
    for r in deliveries:
        if r["slot_ms"] is not None:
            slots[r["job"]][r["token"]].add(r["slot_ms"])
    for rows in run.rows.values():
        for row in rows.values():
            slot = SLOT_ID.match(row["id"])
            if row["fencing_token"] and slot:
                slots[row["job"]][row["fencing_token"]].add(int(slot["ms"]))
    shared = [f"{job} token {token} on slots {[iso(s) for s in sorted(on)][:4]}"
              for job, by_token in slots.items() for token, on in by_token.items() if len(on) > 1]
    report.add("G2", "unique tokens", "per job, no fencing token carried by two slots (target "
               "and histories)", shared)

    # Tokens follow slot order for jobs with one lock per job (overlap forbid and queue):
    # their claims are serialised by the lock, and the FIRED rule of §4.2 stops a claim of
    # an earlier slot once a later one committed. (Two claims of an overlap=allow job may
    # overlap in time; only the real-time order below binds them.)
    by_job = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in deliveries:
        if r["slot_ms"] is not None and run.jobs.get(r["job"], {}).get("overlap") != "allow":
            by_job[r["job"]][r["slot_ms"]].append(r)
    order = []
    for job, slots in by_job.items():
        best = None  # (token, request) of the highest token among earlier slots
        for slot in sorted(slots):
            low = min(slots[slot], key=lambda r: r["token"])
            if best is not None and best[0] >= low["token"]:
                order.append(f"{job}: slot {iso(slot)} token {low['token']} ({low.get('instance')})"
                             f" not above slot {best[1]['scheduled_at']} token {best[0]} "
                             f"({best[1].get('instance')})")
            high = max(slots[slot], key=lambda r: r["token"])
            if best is None or high["token"] > best[0]:
                best = (high["token"], high)
    report.add("G2", "slot order", "per job of overlap forbid or queue, a later slot's token "
               "is above every earlier slot's", order)

    # Real time: a delivery that arrived before a later slot's claim could start (the slot
    # instant, less G2_CLAIM_EARLY_MS) carries a lower token than that slot's.
    late = []
    for job in {r["job"] for r in deliveries}:
        items = sorted((r for r in deliveries if r["job"] == job), key=lambda r: r["wall"])
        arrivals = [r["wall"] for r in items]
        prefix, best = [], None
        for r in items:
            if best is None or r["token"] > best["token"]:
                best = r
            prefix.append(best)
        for r in items:
            if r["slot_ms"] is None:
                continue
            index = bisect.bisect_left(arrivals, r["slot_ms"] - G2_CLAIM_EARLY_MS) - 1
            if index >= 0 and prefix[index]["token"] >= r["token"] and \
                    prefix[index]["key"] != r["key"]:
                earlier = prefix[index]
                late.append(f"{job}: {r['key']} token {r['token']} ({r.get('instance')}) not above"
                            f" {earlier['token']} of {earlier['key']} ({earlier.get('instance')}),"
                            f" which arrived {r['slot_ms'] - earlier['wall']} ms before the slot")
    report.add("G2", "real-time order", "a claim that starts after a delivery arrived mints a "
               "higher token", late)


def check_g3(run, report):
    # Replay of the target's acceptances in the order it decided them: scope job compares
    # with every token accepted for the job, scope slot (never for a job accepted with scope
    # job before) with the tokens accepted for the key.
    job_highest, key_highest, job_scoped, stale = {}, {}, set(), []
    for r in run.requests:
        if r.get("decision") != "applied":
            continue
        job, key, token = r["job"], r["key"], r["token"]
        if r.get("scope") == "slot" and job not in job_scoped:
            highest, scope = key_highest.get(key, (0, None)), "slot"
        else:
            highest, scope = job_highest.get(job, (0, None)), "job"
            job_scoped.add(job)
        if token < highest[0]:
            stale.append(f"{key} token {token} accepted after {highest[0]} ({highest[1]}) in "
                         f"scope {scope}")
        if token > job_highest.get(job, (0, None))[0]:
            job_highest[job] = (token, key)
        if token > key_highest.get(key, (0, None))[0]:
            key_highest[key] = (token, key)
    report.add("G3", "no stale acceptance", "no token accepted below one accepted earlier in "
               "its fence scope (job, or slot with Cronfence-Fence-Scope: slot)", stale)

    # What the target acted on agrees with the signed body, and each job keeps one scope.
    mismatch, scopes = [], collections.defaultdict(set)
    for r in signed(run.requests):
        scopes[r["job"]].add(r.get("scope"))
        wrong = []
        if r.get("body_token") != r["token"]:
            wrong.append(f"body token {r.get('body_token')}")
        if r.get("body_job") != r["job"]:
            wrong.append(f"body job {r.get('body_job')}")
        if r.get("body_run") != r.get("run"):
            wrong.append(f"body run {r.get('body_run')} vs header {r.get('run')}")
        if wrong:
            mismatch.append(f"{r['key']} token {r['token']}: " + ", ".join(wrong))
    mismatch += [f"{job} sent fence scopes {sorted(map(str, s))}"
                 for job, s in scopes.items() if len(s) > 1]
    report.add("G3", "headers match body", "Fencing-Token, Cronfence-Job and Cronfence-Run "
               "equal the body's; one fence scope per job", mismatch)


def check_g4(run, report):
    bad = [f"{r.get('key')} token {r.get('token_text')} from {r.get('instance')}: "
           f"{r.get('sig_error')} -> {r.get('status')}"
           for r in run.requests if not r.get("sig_ok")]
    report.add("G4", "signatures", "every request carries a valid Cronfence-Signature v2 "
               "(binding the job) and a valid Standard Webhooks webhook-signature", bad)
    accepted = [f"{r.get('key')}: {r.get('sig_error')}" for r in run.requests
                if not r.get("sig_ok") and r.get("status") == 200]
    report.add("G4", "accepted signed", "the target accepted nothing without a valid "
               "signature", accepted)
    keys = []
    for r in signed(run.requests):
        slot = r["slot_ms"]
        if slot is None:
            keys.append(f"{r['key']}: bad Cronfence-Scheduled-At {r.get('scheduled_at')!r}")
        elif r["key"] != f"{r['job']}@{r['scheduled_at']}":
            keys.append(f"{r['key']}: not {r['job']}@{r['scheduled_at']}")
        elif r.get("run") != f"{r['job']}@{slot}":
            keys.append(f"{r['key']}: run id {r.get('run')} is not {r['job']}@{slot}")
        elif not isinstance(r.get("attempt"), int) or r["attempt"] < 1:
            keys.append(f"{r['key']}: bad Cronfence-Attempt {r.get('attempt')!r}")
    report.add("G4", "idempotency keys", "Idempotency-Key is <job>@<scheduled_at> and the run "
               "id <job>@<ms>", keys)
    schemes = collections.Counter(",".join(r.get("sig_schemes") or ["none"]) for r in run.requests)
    report.note("signature schemes seen: " + ", ".join(f"{k} x{v}" for k, v in schemes.items()))


def no_quorum_windows(run):
    """[(start, end, detail)] in CLOCK_MONOTONIC seconds: the periods during which at least 2
    of the 3 nodes were down or without their trust marker, from faults.jsonl."""
    intervals = []  # (node, start, end, why)
    down_at, untrusted_at = {}, {}
    for e in sorted(run.events, key=lambda e: e["mono"]):
        node = e.get("node")
        if e["event"] == "node_down":
            down_at.setdefault(node, e["mono"])
        elif e["event"] == "node_up" and node in down_at:
            intervals.append((node, down_at.pop(node), e["mono"], "down"))
        elif e["event"] == "node_trust":
            if not e["trusted"]:
                untrusted_at.setdefault(node, e["observed_mono"])
            elif node in untrusted_at:
                start = untrusted_at.pop(node)
                end = e.get("last_absent_mono") or start
                if end > start:
                    intervals.append((node, start, end, "untrusted"))
    inf = float("inf")
    intervals += [(node, start, inf, "down") for node, start in down_at.items()]
    intervals += [(node, start, inf, "untrusted") for node, start in untrusted_at.items()]
    points = sorted({t for _, s, e, _ in intervals for t in (s, e)})
    windows = []
    for start, end in zip(points, points[1:]):
        middle = (start + end) / 2 if end != inf else start + 1
        out = {(node, why) for node, s, e, why in intervals if s <= middle < e}
        if len({node for node, _ in out}) >= 2:
            detail = ", ".join(f"{node} {why}" for node, why in sorted(out))
            if windows and windows[-1][1] == start:
                windows[-1] = (windows[-1][0], end, windows[-1][2])
            else:
                windows.append((start, end, detail))
    return windows


def check_g5(run, report):
    windows = no_quorum_windows(run)
    violations = []
    for r in signed(run.requests):
        slot_ms = ms_of(r.get("scheduled_at"))
        if slot_ms is None or r.get("wall") is None:
            continue
        # The slot's instant on the monotonic clock of the log, less the early-claim allowance:
        # no claim of this slot (nor of its retries) can have started before.
        claim_mono = r["mono"] - (r["wall"] - slot_ms) / 1000 - G2_CLAIM_EARLY_MS / 1000
        for start, end, detail in windows:
            if start + G5_MARGIN_S <= claim_mono and r["mono"] <= end:
                violations.append(f"{r['key']} token {r['token']} attempt {r.get('attempt')} "
                                  f"({r.get('instance')}, {r.get('decision')}) claimed at the "
                                  f"earliest {claim_mono - start:.1f} s into and arrived "
                                  f"{r['mono'] - start:.1f} s into a {end - start:.1f} s loss "
                                  f"of quorum ({detail})")
                break
    report.add("G5", "no firing without quorum", "no delivery of a slot whose claim could only "
               "start while 2 of 3 nodes were down or untrusted arrived before they were back",
               violations)
    total = sum(min(end, run.meta.get("faults_end_mono", end)) - start
                for start, end, _ in windows)
    report.note(f"no-quorum windows from the faults log: {len(windows)}, {total:.0f} s in all")


def check_g6(run, report):
    missing, succeeded_unseen = [], []
    answered = set()  # (key, token) the target answered 2xx
    for r in signed(run.requests):
        if r.get("status") == 200:
            answered.add((r["key"], r["token"]))
        if r.get("decision") != "applied" or r["slot_ms"] is None:
            continue
        run_id = f"{r['job']}@{r['slot_ms']}"
        for instance in run.instances:
            row = run.rows[instance].get(run_id)
            if row is None:
                missing.append(f"{run_id} token {r['token']} (applied, sent by "
                               f"{r.get('instance')}): no record on {instance}")
            elif row["fencing_token"] != r["token"] or row["status"] not in FINAL:
                missing.append(f"{run_id} token {r['token']} (applied, sent by "
                               f"{r.get('instance')}): {instance} has {row['status']} token "
                               f"{row['fencing_token']}")
    report.add("G6", "deliveries recorded", "every delivery the target applied is in every "
               "instance's history with its token and a final status", missing)
    for instance in run.instances:
        for row in run.rows[instance].values():
            slot = SLOT_ID.match(row["id"])
            if row["status"] != "succeeded" or not slot or row["job"] not in run.jobs:
                continue
            key = f"{row['job']}@{iso(int(slot['ms']))}"
            if (key, row["fencing_token"]) not in answered:
                succeeded_unseen.append(f"{row['id']} on {instance}: succeeded with token "
                                        f"{row['fencing_token']}, which the target never "
                                        f"answered with 2xx")
    report.add("G6", "successes real", "a run recorded succeeded was answered 2xx by the "
               "target with that token", succeeded_unseen)


def check_g7(run, report):
    report.add("G7", "integrity", "PRAGMA integrity_check is ok on every database",
               [f"{name}: {result}" for name, result in run.integrity.items() if result != "ok"])
    crashes = []
    for e in run.events:
        if e["event"] == "instance_exit":
            crashes.append(f"{e['instance']} exited on its own with {e['code']} at wall "
                           f"{iso(e['wall'])}")
        elif e["event"] == "instance_down" and e.get("signal") == 15 and e.get("code") != 0:
            crashes.append(f"{e['instance']} exited {e.get('code')} after SIGTERM at wall "
                           f"{iso(e['wall'])}")
    report.add("G7", "no crash", "no instance exited but by the harness's kill -9 or with 0 "
               "after SIGTERM", crashes)
    reports = []
    for info in run.meta.get("instances", []):
        path = run.out / info["stderr"]
        text = path.read_text(errors="replace") if path.exists() else ""
        for number, line in enumerate(text.splitlines(), 1):
            if any(marker in line for marker in SANITIZER_MARKERS):
                reports.append(f"{path.name}:{number}: {line.strip()[:200]}")
    report.add("G7", "no sanitizer report", "no AddressSanitizer, LeakSanitizer or UBSan "
               "report on any instance's stderr", reports)


def outcome(run, instance, job, slot_ms):
    """(kind, status, token, row): what instance recorded for the slot. kind is "row",
    "summary" or "none"."""
    row = run.rows[instance].get(f"{job}@{slot_ms}")
    if row is not None:
        return "row", row["status"], row["fencing_token"], row
    summary = run.summary_covering(instance, job, slot_ms)
    if summary is not None:
        return "summary", "missed", None, summary
    return "none", None, None, None


def text_of(kind, status, token):
    if kind == "none":
        return "-"
    if kind == "summary":
        return "missed(summary)"
    return f"{status}/{token}" if token else status


def check_slots(run, report):
    """Convergence of the histories and the explanation of every expected slot; writes
    slots.tsv."""
    applied = collections.defaultdict(list)
    for r in run.requests:
        if r.get("sig_ok") and r.get("slot_ms") is not None and r.get("decision") in (
                "applied", "duplicate", "stale"):
            applied[(r["job"], r["slot_ms"])].append(f"{r['decision']}:{r['token']}")
    disagree, nowhere, somewhere, running, unexplained = [], [], [], [], []
    statuses = collections.Counter()
    with open(run.out / "slots.tsv", "w", encoding="utf-8") as table:
        table.write("slot\tscheduled_at\ttarget\t" + "\t".join(run.instances) + "\tverdict\n")
        for job in sorted(run.jobs):
            for slot in run.window(job):
                slot_id = f"{job}@{slot}"
                seen = {i: outcome(run, i, job, slot) for i in run.instances}
                verdicts = []
                absent = [i for i, (kind, *_rest) in seen.items() if kind == "none"]
                if len(absent) == len(run.instances):
                    nowhere.append(slot_id)
                    verdicts.append("no-record")
                elif absent:
                    somewhere.append(f"{slot_id}: no record on {','.join(absent)}")
                    verdicts.append("no-record-on-some")
                for instance, (kind, status, token, row) in seen.items():
                    if kind == "none":
                        continue
                    statuses[status] += 1
                    if status == "running":
                        running.append(f"{slot_id} on {instance} (token {token}, by "
                                       f"{row['instance']})")
                        verdicts.append("running")
                    elif status == "missed" and not (row["reason"] or "").strip():
                        unexplained.append(f"{slot_id} on {instance}: missed without a reason")
                        verdicts.append("missed-no-reason")
                    elif status in DELIVERED and not token:
                        unexplained.append(f"{slot_id} on {instance}: {status} without a token")
                        verdicts.append("no-token")
                    elif status not in FINAL:
                        unexplained.append(f"{slot_id} on {instance}: status {status}")
                        verdicts.append("bad-status")
                views = {(status, token) for kind, status, token, _ in seen.values()}
                if len(views) > 1:
                    disagree.append(f"{slot_id}: " + ", ".join(
                        f"{i} -> {text_of(*seen[i][:3])}" for i in run.instances))
                    verdicts.append("disagree")
                table.write("\t".join([slot_id, iso(slot), ",".join(applied[(job, slot)]) or "-",
                                       *(text_of(*seen[i][:3]) for i in run.instances),
                                       ",".join(dict.fromkeys(verdicts)) or "ok"]) + "\n")
    report.add("conv", "histories agree", "every slot of the window has the same status and "
               "token on every instance", disagree)
    report.add("slots", "recorded somewhere", "every expected slot has a record (delivered, "
               "skipped, missed, or a missed summary) on at least one instance", nowhere)
    report.add("slots", "recorded everywhere", "every expected slot has a record on every "
               "instance", somewhere)
    report.add("slots", "not running", "no expected slot is still running on any instance",
               running)
    report.add("slots", "explained", "missed slots give a reason, delivered ones a token",
               unexplained)
    total = sum(len(run.window(job)) for job in run.jobs)
    report.note(f"expected slots checked: {total} ({len(run.jobs)} jobs); outcomes over all "
                f"instances: " + ", ".join(f"{s} {c}" for s, c in statuses.most_common()))


def summary_lines(run):
    lines = []
    decisions = collections.Counter(r.get("decision") for r in run.requests)
    lines.append(f"target: {len(run.requests)} requests: " +
                 ", ".join(f"{k} {v}" for k, v in decisions.most_common()))
    faults = collections.Counter(e["fault"] for e in run.events if e["event"] == "fault")
    lines.append(f"faults: {sum(faults.values())}: " +
                 ", ".join(f"{k} {v}" for k, v in sorted(faults.items())))
    settle = run.meta.get("settle", {})
    lines.append(f"seed {run.meta.get('seed')}, {run.meta.get('minutes')} min, settle "
                 f"{settle.get('seconds')} s with {settle.get('stuck_running')} runs stuck running")
    return lines


def check(out, examples=5):
    """Runs every check on the run in out; prints and saves the report; returns the exit
    status (1 on any violation)."""
    run = Run(out)
    report = Report(examples)
    for step in (check_sanity, check_g1, check_g2, check_g3, check_g4, check_g5, check_g6,
                 check_g7, check_slots):
        step(run, report)
    text = "\n".join(summary_lines(run)) + "\n\n" + report.render() + "\n"
    print(text, end="")
    (out / "report.txt").write_text(text)
    (out / "violations.json").write_text(json.dumps(
        [{"guarantee": g, "check": n, "description": d, "count": len(v), "violations": v}
         for g, n, d, v in report.rows], indent=1) + "\n")
    return 1 if report.failed() else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="a chaos run's folder")
    parser.add_argument("--examples", type=int, default=5, help="examples printed per check")
    args = parser.parse_args(argv)
    if not (args.out / "run.json").exists():
        print(f"check.py: {args.out} holds no chaos run (no run.json)", file=sys.stderr)
        return 2
    return check(args.out, args.examples)


if __name__ == "__main__":
    sys.exit(main())
