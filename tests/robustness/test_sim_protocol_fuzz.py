"""Mutated simulator page replies: every one must end as a ``SimError`` (one failed episode) or as a
valid observation, never as another exception (which would end a whole evaluation) or a hang.

Two harnesses share the mutators: the decoder fed directly (``decode`` -> ``check_reply`` ->
``parse_obs``, as ``Link.receive`` and ``SimEnv.step`` call them), and a live loopback link where
this test plays the page: ``SimEnv(viewer=True)`` starts no browser, and a Python client redeems the
page's boot code, says hello and answers each request with the next mutated reply.
"""

from __future__ import annotations

import json
import queue
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import parse_qs, urlsplit
from urllib.request import urlopen

import numpy as np
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.robustness.fuzz import SIZES, FuzzRun, pick, seed
from vla_lab.sim import SimEnv, protocol
from vla_lab.sim.errors import SimError, SimProtocolError
from vla_lab.sim.manifest import load_manifest

SIZE = 16  # image side: the smallest SimEnv accepts keeps each reply small
PROBES = {"direct": {"short": 2000, "long": 100_000}, "live": {"short": 150, "long": 5000}}
ZERO = [0, 0, 0, 0, 0, 0, 1]

WEIRD = [
    None,
    True,
    False,
    0,
    -1,
    2**31,
    2**63,
    10**30,
    10**400,
    1e308,
    -1e-308,
    0.5,
    float("nan"),
    float("inf"),
    "",
    "x" * 300,
    "agentview",
    "\ud800",
    [],
    [0] * 7,
    [[0]],
    {},
    {"a": 1},
]


# ------------------------------------------------------------------------------------ valid replies
def valid_obs(rng: np.random.Generator, rid: int) -> tuple[dict, bytes]:
    """An obs reply as the page sends it: header fields and the RGBA payload of one camera."""
    nbytes = SIZE * SIZE * 4
    header = {
        "type": "obs",
        "id": rid,
        "images": [
            {"name": "agentview", "offset": 0, "nbytes": nbytes, "height": SIZE, "width": SIZE, "channels": 4}
        ],
        "proprio": {
            "ee_pos": rng.uniform(-1, 1, 3).tolist(),
            "ee_ori": rng.uniform(-3, 3, 3).tolist(),
            "gripper_width": [float(rng.uniform(0, 0.08))],
        },
        "info": {
            "instruction": "pick up the red block",
            "distance_to_goal": float(rng.uniform(0, 1)),
            "expert_action": rng.uniform(-1, 1, 7).tolist(),
            "max_steps": 100,
        },
        "terminated": bool(rng.random() < 0.05),
        "truncated": False,
        "success": False,
        "reward": 0.0,
    }
    return header, rng.bytes(nbytes)


def _paths(node, prefix=()) -> list[tuple]:
    """Every key/index path inside a JSON tree (dict keys and list indices)."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out += _paths(v, (*prefix, k))
    return out


def _at(tree, path):
    for k in path:
        tree = tree[k]
    return tree


# ----------------------------------------------------------------------------------------- mutators
def _set_field(rng, header, payload):
    path = pick(rng, _paths(header))
    _at(header, path[:-1])[path[-1]] = pick(rng, WEIRD)
    return _encode(header, payload), f"set {'.'.join(map(str, path))}"


def _delete_field(rng, header, payload):
    path = pick(rng, [p for p in _paths(header) if isinstance(_at(header, p[:-1]), dict)])
    del _at(header, path[:-1])[path[-1]]
    return _encode(header, payload), f"delete {'.'.join(map(str, path))}"


def _extra_image(rng, header, payload):
    """A second image descriptor pointing anywhere (overlapping, past the end, duplicate name)."""
    im = dict(header["images"][0])
    im.update(name=pick(rng, ["agentview", "wrist", ""]), offset=int(rng.integers(0, 2 * len(payload))))
    header["images"].append(im)
    return _encode(header, payload), f"extra image {im['name']!r} at {im['offset']}"


def _reply_type(rng, header, payload):
    header["type"] = pick(rng, ["pong", "error", "batch", "closed", "hello", "teleop_episode", "step", 7])
    if header["type"] == "error" and rng.random() < 0.5:
        header.update(code=pick(rng, WEIRD), message=pick(rng, WEIRD))
    return _encode(header, payload), f"type {header['type']!r}"


def _version(rng, header, payload):
    return _encode(header, payload, v=pick(rng, [0, 2, "1", None, 1.0, True])), "version"


def _deep(rng, header, payload):
    depth = int(rng.integers(500, 5000))
    raw = b'{"v": 1, "type": "obs", "info": ' + b"[" * depth + b"]" * depth + b"}"
    return struct.pack("<I", len(raw)) + raw + payload, f"nesting depth {depth}"


def _huge_int(rng, header, payload):
    digits = int(rng.integers(4000, 6000))
    raw = json.dumps(header).encode().replace(b'"reward": 0.0', b'"reward": ' + b"7" * digits)
    return struct.pack("<I", len(raw)) + raw + payload, f"{digits}-digit reward"


def _flip_bits(rng, header, payload):
    data = bytearray(_encode(header, payload))
    n = int(rng.integers(1, 9))
    for pos in rng.integers(0, len(data), n):
        data[pos] ^= 1 << int(rng.integers(8))
    return bytes(data), f"{n} bit flips"


def _flip_header_bits(rng, header, payload):
    """Bit flips inside the JSON header: most give broken JSON, some a different valid value."""
    data = bytearray(_encode(header, payload))
    (n,) = struct.unpack_from("<I", data)
    for pos in rng.integers(4, 4 + n, int(rng.integers(1, 4))):
        data[pos] ^= 1 << int(rng.integers(8))
    return bytes(data), "header bit flips"


def _truncate(rng, header, payload):
    data = _encode(header, payload)
    cut = int(rng.integers(0, len(data)))
    return data[:cut], f"truncated to {cut} of {len(data)} bytes"


def _length_prefix(rng, header, payload):
    data = _encode(header, payload)
    n = int(pick(rng, [0, 1, 2**20, 2**20 + 1, 2**32 - 1, int(rng.integers(0, len(data) + 10))]))
    return struct.pack("<I", n) + data[4:], f"header length {n}"


def _short_payload(rng, header, payload):
    cut = int(rng.integers(0, len(payload)))
    return _encode(header, payload[:cut]), f"payload {cut} of {len(payload)} bytes"


def _text_frame(rng, header, payload):
    return json.dumps(header), "text frame"


def _random_bytes(rng, header, payload):
    n = int(rng.integers(0, 64))
    return rng.bytes(n), f"{n} random bytes"


def _valid(rng, header, payload):
    return _encode(header, payload), "valid"


MUTATORS = [
    (_valid, 3),
    (_set_field, 12),
    (_delete_field, 4),
    (_extra_image, 2),
    (_reply_type, 2),
    (_version, 1),
    (_deep, 1),
    (_huge_int, 1),
    (_flip_bits, 3),
    (_flip_header_bits, 3),
    (_truncate, 2),
    (_length_prefix, 2),
    (_short_payload, 1),
    (_text_frame, 1),
    (_random_bytes, 1),
]
_WEIGHTS = np.array([w for _, w in MUTATORS], float) / sum(w for _, w in MUTATORS)


def mutated_reply(rng: np.random.Generator, rid: int) -> tuple[bytes | str, str]:
    header, payload = valid_obs(rng, rid)
    mutate = MUTATORS[int(rng.choice(len(MUTATORS), p=_WEIGHTS))][0]
    return mutate(rng, header, payload)


def _encode(header: dict, payload: bytes, **extra) -> bytes:
    # allow_nan: a page is JavaScript and could send anything, NaN tokens included
    raw = json.dumps({"v": protocol.PROTOCOL_VERSION, **header, **extra}).encode()
    return struct.pack("<I", len(raw)) + raw + payload


# ------------------------------------------------------------------------------------ what is valid
def check_decoded(obs: dict, reward: float) -> str | None:
    """Why a decoded reply is not well-formed (the decoder's promise), or None: images (H, W, 3)
    uint8, proprio finite float32 of its dimension, a finite reward."""
    for key, dim in {"ee_pos": 3, "ee_ori": 3, "gripper_width": 1}.items():
        v = obs.get(key)
        if not isinstance(v, np.ndarray) or v.shape != (dim,) or not np.isfinite(v).all():
            return f"{key} is {v!r}"
    for key, image in obs.items():
        if key not in ("ee_pos", "ee_ori", "gripper_width") and (image.ndim != 3 or image.shape[2] != 3):
            return f"image {key!r} has shape {image.shape}"
    return None if np.isfinite(reward) else f"reward {reward!r}"


def check_observation(obs: dict, reward: float) -> str | None:
    """Why ``obs`` is not what SimEnv promises (its observation space), or None."""
    image = obs.get("agentview")
    if not isinstance(image, np.ndarray) or image.shape != (SIZE, SIZE, 3) or image.dtype != np.uint8:
        return f"{CAMERA_GAP}: agentview is {getattr(image, 'shape', image)!r}, expected ({SIZE}, {SIZE}, 3)"
    return check_decoded(obs, reward)


#: a reply lacking the camera (or carrying it at another size) that reached the caller: SimEnv
#: must refuse it (check_frames); counted as a crash
CAMERA_GAP = "camera unchecked"


# ------------------------------------------------------------------------------- direct to decoder
def _decode_like_the_link(data, rid: int) -> dict:
    header, payload = protocol.decode(data)
    protocol.check_reply(header, rid, "obs")
    obs, result = protocol.parse_obs(header, payload)
    return {"obs": obs, "reward": result["reward"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", SIZES)
def test_mutated_replies_through_the_decoder(size):
    rng = np.random.default_rng(seed(20260301))
    run = FuzzRun("sim-protocol-decoder", size, seed(20260301))
    for rid in range(1, PROBES["direct"][size] + 1):
        data, what = mutated_reply(rng, rid)
        try:
            got = _decode_like_the_link(data, rid)
        except SimError as e:
            run.add("clear_error" if str(e) else "crash", what, str(e))
            continue
        except Exception as e:  # the point of the test: any other exception is a finding
            run.add("crash", what, f"{type(e).__name__}: {e}")
            continue
        wrong = check_decoded(got["obs"], got["reward"])
        run.add("crash" if wrong else "accepted", what, wrong or "")
    run.finish(min_tried=PROBES["direct"][size])


# --------------------------------------------------------------------------------- live, loopback
SILENCE = b""  # the page reads the request and never answers: SimEnv must time out


class ScriptedPage:
    """Plays the simulator page on a real SimServer link: redeems the boot code, says hello, then
    answers each request with the next reply queued in ``replies`` (a function of the request id
    giving bytes, text, SILENCE, or None to close the link)."""

    def __init__(self, url: str, replies: queue.Queue):
        self.url, self.replies = url, replies
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        parts = urlsplit(self.url)
        boot = parse_qs(parts.query)["boot"][0]
        with urlopen(f"{parts.scheme}://{parts.netloc}/session?boot={boot}", timeout=10) as resp:
            ws_url = json.loads(resp.read())["ws"]
        with connect(ws_url, compression=None, max_size=None, open_timeout=10) as conn:
            conn.send(protocol.encode({"type": "hello", "manifest": load_manifest()}))
            self._answer(conn)

    def _answer(self, conn) -> None:
        try:
            for data in conn:
                (n,) = struct.unpack_from("<I", data)
                reply = self.replies.get(timeout=30)(json.loads(bytes(data[4 : 4 + n]))["id"])
                if reply is None:
                    return  # leaving the `with` closes the link
                if reply != SILENCE:
                    conn.send(reply)
        except ConnectionClosed:
            return  # SimEnv dropped the link (a time-out, a closed page): this page is done


class LiveEnv:
    """A SimEnv whose page is played by this test; whenever SimEnv starts a backend (the first reset,
    and after it dropped a dead link), a new ScriptedPage connects, reading the same reply queue."""

    def __init__(self):
        self.replies: queue.Queue = queue.Queue()
        self.env = SimEnv(
            "pick_block",
            image_size=SIZE,
            timeout=1.0,
            startup_timeout=10.0,
            viewer=True,
            on_url=lambda url: ScriptedPage(url, self.replies),
        )
        self.active = False  # an episode is running: the next probe is a step, else a reset
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="sim-fuzz")

    def probe(self, reply, bound: float) -> tuple[dict, float]:
        """One reset or step answered by ``reply``; raises what SimEnv raises, FutureTimeout on a hang."""
        while not self.replies.empty():  # a reply no request asked for (the link died before it)
            self.replies.get_nowait()
        self.replies.put(reply)
        return self.pool.submit(self._call).result(timeout=bound)

    def _call(self) -> tuple[dict, float]:
        if not self.active:
            obs, _ = self.env.reset(seed=0)
            self.active = True
            return obs, 0.0
        obs, reward, terminated, truncated, _ = self.env.step(ZERO)
        self.active = not (terminated or truncated)
        return obs, reward

    def close(self) -> None:
        self.env.close()
        self.pool.shutdown(wait=False)


def _live_reply(rng: np.random.Generator):
    """(reply function, description): mostly a mutated obs, sometimes a closed link, silence or a
    reply to an earlier request."""
    sub = int(rng.integers(2**63))
    choice = rng.random()
    if choice < 0.02:
        return (lambda rid: None), "the page closes the link"
    if choice < 0.03:
        return (lambda rid: SILENCE), "the page never answers"
    if choice < 0.05:
        return (lambda rid: _encode(*valid_obs(np.random.default_rng(sub), rid - 1))), "stale reply id"
    # the same draws for any id: the description is that of the reply actually sent
    return (lambda rid: mutated_reply(np.random.default_rng(sub), rid)[0]), mutated_reply(
        np.random.default_rng(sub), 0
    )[1]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("size", SIZES)
def test_mutated_replies_over_a_live_link(size):
    rng = np.random.default_rng(seed(20260302))
    run = FuzzRun("sim-protocol-live", size, seed(20260302))
    live = LiveEnv()
    try:
        for _ in range(PROBES["live"][size]):
            reply, what = _live_reply(rng)
            kind = "step" if live.active else "reset"
            outcome, detail = _live_outcome(live, reply)
            _add_live(run, outcome, f"{kind}: {what}", detail)
            if outcome == "hang":
                break  # the stuck call holds the env; nothing after it would be meaningful
    finally:
        live.close()
    run.finish(min_tried=PROBES["live"][size])


def _live_outcome(live: LiveEnv, reply) -> tuple[str, str]:
    try:
        obs, reward = live.probe(reply, bound=8.0)  # SimEnv's own time-out is 1 s
    except SimError as e:  # first: SimTimeoutError is a TimeoutError too, as is the future's
        if live.env.backend is None:
            live.active = False  # the link was dropped: the next probe resets
        return ("clear_error" if str(e) else "crash"), f"{type(e).__name__}: {e}"
    except FutureTimeout:
        return "hang", "no result within 8 s"
    except Exception as e:  # the point of the test: any other exception is a finding
        live.active = False
        return "crash", f"{type(e).__name__}: {e}"
    wrong = check_observation(obs, reward)
    return ("crash" if wrong else "accepted"), wrong or ""


def _add_live(run: FuzzRun, outcome: str, what: str, detail: str) -> None:
    run.add(outcome, what, detail)


@pytest.mark.timeout(60)
def test_a_reply_without_the_camera_is_a_protocol_error():
    live = LiveEnv()
    try:
        live.probe(lambda rid: _encode(*valid_obs(np.random.default_rng(0), rid)), bound=8.0)

        def renamed(rid):
            header, payload = valid_obs(np.random.default_rng(1), rid)
            header["images"][0]["name"] = "agentvieW"
            return _encode(header, payload)

        with pytest.raises(SimProtocolError, match="agentview"):
            live.probe(renamed, bound=8.0)
    finally:
        live.close()
