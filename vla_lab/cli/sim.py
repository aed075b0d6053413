"""``vla-sim``: the simulator's command line.

    vla-sim info [--json]                         tasks (with instructions) and environments
    vla-sim view [--task T] [--environment E] [--seed S] [--record FILE.hdf5]
                                                  keyboard teleoperation in a real browser
    vla-sim view --spectate [--episodes N] [--noise X]
                                                  watch the scripted expert, driven from Python

``view`` prints a loopback URL to open in a browser and runs until interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading


def cmd_info(args) -> int:
    from vla_lab.sim import list_environments, list_tasks, load_manifest

    if args.json:
        print(json.dumps({"tasks": list_tasks(), "environments": list_environments()}, indent=2))
        return 0
    man = load_manifest()
    r = man["robot"]
    print(f"vla_lab tabletop simulator {man['sim_version']} (protocol v{man['protocol_version']})")
    print(
        f"actions [dx dy dz droll dpitch dyaw gripper]: +/-1 = {r['max_translation_per_step'] * 100:g} cm / "
        f"{r['max_rotation_per_step']:g} rad per step at {1 / r['control_dt']:g} Hz; gripper 1 = open, 0 = closed\n"
    )
    print("tasks:")
    for t in list_tasks():
        print(f"  {t['name']}  (max {t['max_steps']} steps) — {t['description']}")
        for tpl in t["instruction_templates"]:
            print(f'      "{tpl}"')
        print(f"      success: {t['success_criterion']}")
    print("\nenvironments:")
    for e in list_environments():
        print(f"  {e['name']} — {e['description']}")
    return 0


def _wait_for_interrupt(seconds: float | None) -> None:
    done = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: done.set())
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait(seconds)


def cmd_view(args) -> int:
    from vla_lab.sim.manifest import check_environment, check_task

    try:
        check_task(args.task)
        check_environment(args.environment)
    except ValueError as e:
        print(f"vla-sim: {e}", file=sys.stderr)
        return 2
    if args.spectate:
        return _spectate(args)
    from vla_lab.rollout.teleop import TeleopRecorder
    from vla_lab.sim.server import SimServer
    from vla_lab.sim.viewer import make_teleop_handler

    recorder = TeleopRecorder(args.record)

    def on_event(kind, data):
        if kind == "saved":
            print(
                f"saved {data['demo']} ({data['steps']} steps, success={data['success']}) to {args.record}",
                flush=True,
            )
        else:
            print(f"page {kind}", flush=True)

    server = SimServer(handler=make_teleop_handler(recorder, on_event))
    try:
        url = server.page_url(
            "view.html", mode="teleop", task=args.task, environment=args.environment, seed=args.seed
        )
        print(f"open {url}", flush=True)
        print(
            "keys: W/S A/D R/F move, Q/E yaw, Space gripper, Enter record, K keep (success), J keep (failure), X discard",
            flush=True,
        )
        if not args.record:
            print("not recording: pass --record FILE.hdf5 to save episodes", flush=True)
        _wait_for_interrupt(args.duration)
    finally:
        server.close()
    print(f"{len(recorder.saved)} episode(s) saved", flush=True)
    return 0


def _spectate(args) -> int:
    from vla_lab.sim import SimEnv
    from vla_lab.sim.expert import ScriptedExpert

    env = SimEnv(
        args.task,
        args.environment,
        viewer=True,
        startup_timeout=args.connect_timeout,
        on_url=lambda url: print(f"open {url}", flush=True),
    )
    expert = ScriptedExpert(noise_std=args.noise)
    try:
        for k in range(args.episodes):
            seed = args.seed + k
            _, info = env.reset(seed=seed)
            print(f"episode {k}: {info['instruction']}", flush=True)
            while True:
                _, _, term, trunc, info = env.step(expert.act(info))
                if args.slow:
                    threading.Event().wait(0.05)
                if term or trunc:
                    break
            print(f"episode {k}: success={info['success']} steps={info['step']}", flush=True)
    finally:
        env.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="vla-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("info", help="list tasks and environments")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("view", help="live view: keyboard teleoperation or spectator mode")
    p.add_argument("--task", default="pick_block")
    p.add_argument("--environment", default="studio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--record", help="HDF5 file that kept teleoperation episodes are appended to")
    p.add_argument("--spectate", action="store_true", help="show scripted-expert episodes driven from Python")
    p.add_argument("--episodes", type=int, default=3, help="spectator mode: episodes to run")
    p.add_argument("--noise", type=float, default=0.0, help="spectator mode: expert noise std")
    p.add_argument(
        "--slow", action="store_true", help="spectator mode: pace the episodes at the control rate"
    )
    p.add_argument(
        "--connect-timeout", type=float, default=600.0, help="spectator mode: seconds to wait for a browser"
    )
    p.add_argument("--duration", type=float, default=None, help="teleoperation: stop after this many seconds")
    p.set_defaults(func=cmd_view)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
