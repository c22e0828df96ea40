"""The `riskmon` command: parses arguments and calls in; no logic of its own."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from monitor import __version__, eventloop
from monitor.durations import parse_duration
from monitor.logs import configure_logging
from monitor.shard import Shard
from monitor.venues.registry import PluginError
from monitor.yamlsource import Problem, SourceError

DEFAULT_CONFIG = "riskmon.yaml"
#: The exit code of a command whose stdout was closed early: the shell's for a process
#: SIGPIPE ended (128 + 13), kept apart from the codes the commands document.
EXIT_BROKEN_PIPE = 141


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "run",
        help="the daemon: poll, evaluate rules, export metrics, publish alerts",
        description="Run the daemon. SIGHUP reloads the config and rules; SIGTERM and SIGINT "
        "stop it gracefully (polling stops, pending events are flushed for up to 10 s).",
    )
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file")
    _add_shard(parser)


def _add_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="simulator + daemon + MQTT broker + a console view of alerts, in one command",
        description="Run the venue simulator, the daemon and an embedded MQTT broker on a "
        "built-in scenario that repeats every minute, and show the accounts and the alert "
        "events as they arrive over MQTT. The logs go to a file.",
    )
    parser.add_argument(
        "--duration",
        type=_duration_arg,
        metavar="DURATION",
        help="stop after this long, exit 0 (90s, 2m, or seconds; default: until Ctrl-C)",
    )
    parser.add_argument(
        "--http-port",
        type=int,
        default=9817,
        metavar="PORT",
        help="/metrics and the API (default 9817, or a free one when taken; 0: any free)",
    )
    parser.add_argument(
        "--mqtt-port",
        type=int,
        default=1883,
        metavar="PORT",
        help="the embedded broker (default 1883, or a free one when taken; 0: any free)",
    )
    parser.add_argument(
        "--log-file",
        type=Path,
        default=Path(tempfile.gettempdir()) / "riskmon-demo.log",
        metavar="FILE",
        help="where the logs go (default: riskmon-demo.log in the temp folder, replaced)",
    )


def _duration_arg(text: str) -> float:
    """A duration (`90s`, `1m30s`) or a plain number of seconds."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text!r}")
    return seconds


def _add_snapshot(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "snapshot",
        help="poll every configured account once and print its fields",
        description="Poll every configured account once and print its fields. Exit 0 when "
        "every poll succeeded, 2 when some failed, 1 when the config is invalid.",
    )
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file")
    parser.add_argument("--venue", help="only this venue (by name)")
    parser.add_argument("--account", help="only this account id")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_shard(parser)


def _add_shard(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        type=_shard,
        default=os.environ.get("RISKMON_SHARD"),
        metavar="K/N",
        help="only the accounts that shard K (from 0) of N owns (default: $RISKMON_SHARD)",
    )


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_check(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "check",
        help="validate the config and its rule files, or just the rule files given",
        description="Validate the config and its rule files, or just the rule files given, "
        "and warn where a rule reads a field its venue kind does not send or has "
        "deprecated, and check the config's account params against the rules that read "
        "them. Prints path:line:col: message; exit 0 when clean (warnings allowed), "
        "1 on errors (with --strict, on warnings too).",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 on warnings too (for CI and deploys)"
    )
    parser.add_argument(
        "-c",
        "--config",
        default=None,
        help=f"config file (default: {DEFAULT_CONFIG} when no rule file is given)",
    )
    parser.add_argument("rule_files", nargs="*", metavar="RULEFILE", help="rule files to check")


def _add_test(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "test",
        help="run rule unit tests",
        description="Run rule unit tests (series of field values, expected alerts over "
        "time). Exit 0 when all pass, 1 when any fails, with a readable diff.",
    )
    parser.add_argument("test_files", nargs="+", metavar="TESTFILE")


def _add_replay(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "replay",
        help="run recorded snapshots through rules and print the alert transitions",
        description="Run recorded snapshots (JSON lines) through rule files and print the "
        "alert transitions that would have happened. --set overrides a parameter for every "
        "account: threshold what-ifs.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE.jsonl")
    parser.add_argument(
        "-r",
        "--rules",
        nargs="+",
        action="extend",
        required=True,
        metavar="RULEFILE",
        help="rule files or globs (.yaml, .yml; -r may be repeated); the recordings may "
        "come before or after them",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="params.NAME=VALUE",
        help="override a rule parameter for every account (repeatable)",
    )


def _add_simulate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from monitor.simulator import cli as simulator_cli

    parser = commands.add_parser(
        "simulate",
        help="serve both venue APIs from simulated accounts",
        description="Serve the Clear Street and Polymarket APIs (and Polymarket's token "
        "endpoint) from simulated accounts driven by a scenario file.",
    )
    simulator_cli.add_arguments(parser)


def _add_pagerduty(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "pagerduty",
        help="forward alert events from MQTT to PagerDuty's Events API v2",
        description="Subscribe to the alert events on MQTT (a persistent session) and "
        "forward each to PagerDuty's Events API v2 with the routing key of the first "
        "route that matches its severity and labels; once per event_id, retrying 429 "
        "and 5xx, under the per-key rate limit. SIGTERM and SIGINT stop it cleanly.",
    )
    parser.add_argument("-c", "--config", default="pagerduty.yaml", help="config file")
    parser.add_argument(
        "--check",
        action="store_true",
        help="only validate the config, as `riskmon check` does: exit 0 when the bridge "
        "would start with it, 1 with path:line:col: message lines (routing keys must be "
        "readable; they are never printed)",
    )


def _add_history(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "history",
        help="the journal of events, silences and reloads; --verify checks its chain",
        description="Print the journal riskmon keeps in state_dir (every alert event, "
        "published or suppressed, every silence change, every config and rule load with "
        "the files' SHA-256), oldest first; read from the database directly, with the "
        "daemon running or not. --verify checks the SHA-256 chain: exit 1 naming the "
        "first record that does not chain.",
    )
    parser.add_argument("-c", "--config", default=DEFAULT_CONFIG, help="config file")
    parser.add_argument(
        "--since",
        metavar="T",
        help="from this time on: RFC 3339 (2026-12-05T06:00:00Z) or a duration ago (2h)",
    )
    parser.add_argument("--venue", help="only this venue's events")
    parser.add_argument("--account", help="only this account's events")
    parser.add_argument("--json", action="store_true", help="JSON lines, one record each")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="check the whole chain instead (exit 1 naming the first record that does not "
        "chain); prints the head digest to keep elsewhere",
    )


def _add_silence(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "silence",
        help="mute alerts for a while, through the daemon's API (as amtool does)",
        description="Set, list and expire silences on a running daemon, through its "
        "Alertmanager-shaped API (/api/v2/silences): amtool sees the same silences.",
    )
    parser.add_argument(
        "-c",
        "--config",
        help="the daemon's config: its http section gives the API's address, token and TLS "
        "(monitor/api_client.py; RISKMON_API_URL and RISKMON_API_TOKEN_FILE override)",
    )
    parser.add_argument(
        "--url",
        help="the daemon's HTTP API instead (without -c: $RISKMON_API_URL, or "
        "http://127.0.0.1:9817)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        help="without -c: a file holding the API's bearer token, sent as Authorization: "
        "Bearer (default $RISKMON_API_TOKEN_FILE)",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="silence the alerts all MATCHERs match; prints its id")
    add.add_argument(
        "matchers", nargs="+", metavar="MATCHER", help='alertname=VenueDown, venue="cs" ...'
    )
    add.add_argument(
        "--duration", type=_duration_arg, required=True, help="how long: 30m, 2h, 1h30m"
    )
    add.add_argument("--comment", required=True, help="why (shown to everyone on call)")
    add.add_argument("--author", help="who (default: your user name)")
    listing = actions.add_parser("list", help="the active and pending silences")
    listing.add_argument("--expired", action="store_true", help="the expired ones too")
    listing.add_argument("--json", action="store_true", help="as Alertmanager's JSON")
    expire = actions.add_parser("expire", help="end silences now")
    expire.add_argument("ids", nargs="+", metavar="ID")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="riskmon", description="Real-time risk monitoring for trading accounts."
    )
    parser.add_argument("--version", action="version", version=f"riskmon {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("RISKMON_LOG_LEVEL"),
        choices=["debug", "info", "warning", "error"],
        help="default: info for run, warning otherwise",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(commands)
    _add_snapshot(commands)
    _add_check(commands)
    _add_test(commands)
    _add_replay(commands)
    _add_simulate(commands)
    _add_demo(commands)
    _add_pagerduty(commands)
    _add_history(commands)
    _add_silence(commands)
    return parser


def _snapshot(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.snapshot_cmd import poll_all, render_json, render_table

    config = load_config(args.config)
    if args.venue and not any(v.name == args.venue for v in config.venues):
        known = ", ".join(v.name for v in config.venues)
        print(
            f"riskmon: no venue named {args.venue!r} in {args.config} (known: {known})",
            file=sys.stderr,
        )
        return 1
    shard = _shard(args.shard) if isinstance(args.shard, str) else args.shard
    results = eventloop.run(poll_all(config, venue=args.venue, account=args.account, shard=shard))
    (render_json if args.json else render_table)(results, sys.stdout)
    return 0 if all(r.snapshot is not None for r in results) else 2


def _check(args: argparse.Namespace) -> int:
    from monitor.check_cmd import run_check

    return run_check(args.config, args.rule_files, sys.stdout, sys.stderr, strict=args.strict)


def _run(args: argparse.Namespace) -> int:
    from monitor.daemon import run_daemon

    shard = _shard(args.shard) if isinstance(args.shard, str) else args.shard
    return eventloop.run(run_daemon(Path(args.config), shard=shard))


def _demo(args: argparse.Namespace) -> int:
    from monitor.broker import BrokerUnavailable
    from monitor.demo import log_to_file, run_demo

    try:
        log_to_file(args.log_file, args.log_level or "info")
    except OSError as exc:
        print(
            f"riskmon demo: cannot write the log to {args.log_file}: {exc.strerror}",
            file=sys.stderr,
        )
        return 1
    try:
        eventloop.run(
            run_demo(
                duration=args.duration,
                http_port=args.http_port,
                mqtt_port=args.mqtt_port,
                log_file=args.log_file,
            )
        )
    except KeyboardInterrupt:
        pass
    except BrokerUnavailable as exc:
        print(f"riskmon demo: {exc}", file=sys.stderr)
        return 1
    return 0


def _test(args: argparse.Namespace) -> int:
    from monitor.engine.testing import run_test_files
    from monitor.venues import registry

    return run_test_files(args.test_files, sys.stdout, sorted(registry.kind_names()))


def _replay_arguments(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The rule files and the recordings: `-r` takes every argument after it, so what
    follows its first that is not a YAML file is a recording (`-r rules.yaml FILE`)."""
    rules = args.rules[:1]
    recordings = list(args.files)
    for item in args.rules[1:]:
        (rules if item.endswith((".yaml", ".yml")) else recordings).append(item)
    return rules, recordings


def _replay(args: argparse.Namespace) -> int:
    from monitor.engine.param_usage import params_read
    from monitor.engine.replay import override_problems, parse_overrides, run_replay
    from monitor.engine.rulefile import expand_rule_globs, load_rules

    try:
        overrides = parse_overrides(args.set)
    except ValueError as exc:
        print(f"riskmon replay: {exc}", file=sys.stderr)
        return 2
    rule_args, recordings = _replay_arguments(args)
    if not recordings:
        print("riskmon replay: no recording given (FILE.jsonl)", file=sys.stderr)
        return 2
    unmatched: list[Problem] = []
    paths = expand_rule_globs(rule_args, warnings=unmatched)
    if unmatched:  # a typo must not read as "0 transitions": all clear
        for problem in unmatched:
            print(f"riskmon replay: -r: {problem.message}", file=sys.stderr)
        return 1
    rules, warnings = load_rules(paths)
    for warning in warnings:
        print(warning, file=sys.stderr)
    refused = override_problems(overrides, params_read(rules.rules))
    if refused:  # a what-if on a param no rule reads would read as "never fires"
        for message in refused:
            print(f"riskmon replay: --set {message}", file=sys.stderr)
        return 1
    from monitor.venue_fields import often_absent_map

    return run_replay(recordings, rules, overrides, sys.stdout, often_absent_map())


def _simulate(args: argparse.Namespace) -> int:
    from monitor.simulator import cli as simulator_cli

    try:
        return eventloop.run(simulator_cli.run(args))
    except KeyboardInterrupt:
        return 0


def _history(args: argparse.Namespace) -> int:
    from monitor.config import load_config
    from monitor.history.command import run_history
    from monitor.history.reader import Query, parse_since

    try:
        since = None if args.since is None else parse_since(args.since)
    except ValueError as exc:
        print(f"riskmon history: --since: {exc}", file=sys.stderr)
        return 2
    config = load_config(args.config)
    query = Query(since=since, venue=args.venue, account=args.account)
    return run_history(
        config.state_dir / "riskmon.db",
        query,
        sys.stdout,
        sys.stderr,
        as_json=args.json,
        check=args.verify,
    )


def _pagerduty(args: argparse.Namespace) -> int:
    if args.check:
        from monitor.pagerduty.check import run_pagerduty_check

        return run_pagerduty_check(args.config, sys.stdout)
    from monitor.pagerduty import run_bridge

    if args.log_level is None:  # a daemon: info by default, as `run`
        configure_logging("info")
    return eventloop.run(run_bridge(Path(args.config)))


def _silence(args: argparse.Namespace) -> int:
    from monitor import silence_cmd
    from monitor.api_client import ApiError, ApiTarget, api_target
    from monitor.config import Secret, load_config
    from monitor.yamlsource import SourceError

    try:
        if args.url is None and args.config is not None:
            daemon = api_target(load_config(args.config))  # RISKMON_API_* override it there
        else:
            url = args.url or os.environ.get("RISKMON_API_URL") or "http://127.0.0.1:9817"
            token_file = args.token_file or os.environ.get("RISKMON_API_TOKEN_FILE")
            token = None if not token_file else Secret.file("--token-file", Path(token_file))
            daemon = ApiTarget(url.rstrip("/"), token)
    except (ApiError, SourceError) as exc:
        print(f"riskmon silence: {exc}", file=sys.stderr)
        return 1
    try:
        if args.action == "add":
            silence_id = silence_cmd.add(
                daemon,
                args.matchers,
                duration=args.duration,
                comment=args.comment,
                author=args.author,
            )
            print(silence_id)
        elif args.action == "list":
            silence_cmd.list_silences(daemon, sys.stdout, expired=args.expired, as_json=args.json)
        else:
            silence_cmd.expire(daemon, args.ids)
    except silence_cmd.SilenceCommandError as exc:
        print(f"riskmon silence: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or ("info" if args.command == "run" else "warning"))
    handlers = {
        "run": _run,
        "demo": _demo,
        "snapshot": _snapshot,
        "check": _check,
        "test": _test,
        "replay": _replay,
        "simulate": _simulate,
        "pagerduty": _pagerduty,
        "history": _history,
        "silence": _silence,
    }
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # here, where a reader gone away can still be handled
    except SourceError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except PluginError as exc:
        print(f"riskmon: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader stopped reading (`riskmon snapshot --json | head -1`): nothing to
        # say. Python's flush of stdout at exit would fail again; devnull takes it.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code


if __name__ == "__main__":
    sys.exit(main())
