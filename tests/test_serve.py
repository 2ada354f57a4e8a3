"""`mtkit serve`: a real server on a free port of 127.0.0.1, real HTTP clients. Answers equal
`mtkit translate`'s whatever else is in their batch; LibreTranslate's API and status codes; bad
input, overload, disconnecting clients and SIGTERM."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import run_in_process

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

KEY = "s3cret"


class Server:
    """`mtkit serve` in a child process; its URL from the line it prints."""

    def __init__(self, model: Path, *args: str):
        self.proc = subprocess.Popen([sys.executable, "-m", "mtkit", "serve", "-m", str(model), "--port", "0",
                                      "--source-lang", "en", "--target-lang", "de", *args],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        found = threading.Event()

        def read() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if " on http://" in line:
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        found.wait(120)
        match = re.search(r"on (http://[\d.]+:\d+)", "".join(self.lines))
        assert match, "".join(self.lines)
        self.url = match.group(1)

    def post(self, fields: dict | None = None, body: bytes | None = None, content_type="application/json",
             path="/translate") -> tuple[int, dict]:
        data = body if body is not None else json.dumps(fields).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, path: str) -> tuple[int, object]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=60) as r:
                text = r.read().decode()
                return r.status, json.loads(text) if "json" in r.headers.get("content-type", "") else text
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def rss_mb(self) -> float:
        """Resident memory of the server and its model processes."""
        return sum(_rss_mb(pid) for pid in [self.proc.pid, *self.model_processes()])

    def model_processes(self) -> list[int]:
        children = [int(c) for task in Path(f"/proc/{self.proc.pid}/task").iterdir()
                    for c in (task / "children").read_text().split()]
        return [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]

    def stop(self) -> tuple[int, str]:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(90)  # a stuck connection is cut after 20 s
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the server did not stop: " + "".join(self.lines)[-3000:]) from None
        time.sleep(0.1)
        return code, "".join(self.lines)


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _exited(pid: int) -> bool:
    """Every thread of the process has exited (the leader alone can be a zombie while its other
    threads, which share its open files, are still ending)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        return state == "Z" and len(os.listdir(f"/proc/{pid}/task")) == 1
    except FileNotFoundError:
        return True


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.fixture(scope="module")
def server(reverse_model):
    s = Server(reverse_model, "--api-key", KEY, "--beam", "4")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def sentences(reverse_data):
    return reverse_data["valid_src"].read_text().splitlines()[:24]


def _ask(q, **extra) -> dict:
    return {"q": q, "source": "en", "target": "de", "api_key": KEY, **extra}


def _translate_cli(model: Path, lines: list[str], *args: str) -> list[dict]:
    code, out, err = run_in_process("translate", "-m", str(model), "--beam", "4", "--format", "jsonl", *args,
                                    stdin="".join(line + "\n" for line in lines))
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


# ----------------------------------------------------------------------------- answers
def test_answers_equal_mtkit_translate_whatever_their_batch(server, reverse_model, sentences):
    expected = [t["translation"] for t in _translate_cli(reverse_model, sentences)]
    with ThreadPoolExecutor(12) as pool:  # one sentence per request, many at once: batched together
        answers = list(pool.map(lambda s: server.post(_ask(s)), sentences))
    assert [a for a, _ in answers] == [200] * len(sentences)
    assert [b["translatedText"] for _, b in answers] == expected
    code, body = server.post(_ask(sentences))  # a list gives a list
    assert code == 200 and body["translatedText"] == expected
    code, body = server.post(_ask("\n".join(sentences[:3])))  # lines of one text, translated line by line
    assert code == 200 and body["translatedText"] == "\n".join(expected[:3])


def test_alternatives_are_the_nbest_list(server, reverse_model, sentences):
    nbest = _translate_cli(reverse_model, sentences[:4], "--nbest", "3")
    code, body = server.post(_ask(sentences[:4], alternatives=2))
    assert code == 200
    assert body["translatedText"] == [t["translation"] for t in nbest]
    assert body["alternatives"] == [[h["translation"] for h in t["nbest"][1:3]] for t in nbest]
    code, body = server.post(_ask(sentences[0], alternatives=1))
    assert code == 200 and isinstance(body["alternatives"], list) and len(body["alternatives"]) == 1


def test_form_fields_languages_health_and_the_page(server, sentences):
    form = urllib.parse.urlencode(_ask(sentences[0])).encode()
    code, body = server.post(body=form, content_type="application/x-www-form-urlencoded")
    assert code == 200 and isinstance(body["translatedText"], str)
    code, auto = server.post(_ask(sentences[0], source="auto"))
    assert code == 200 and auto["translatedText"] == body["translatedText"]
    assert auto["detectedLanguage"]["language"] == "en"
    assert server.get("/languages") == (200, [{"code": "en", "name": "English", "targets": ["de"]},
                                              {"code": "de", "name": "German", "targets": []}])
    code, health = server.get("/health")
    assert code == 200 and health["status"] == "ok"
    code, page = server.get("/")
    assert code == 200 and "<form" in page and "translate" in page


def test_libretranslatepy_works_with_the_server(server, sentences):
    lt = pytest.importorskip("libretranslatepy")
    client = lt.LibreTranslateAPI(server.url, api_key=KEY)
    assert client.translate(sentences[0], "en", "de") == server.post(_ask(sentences[0]))[1]["translatedText"]
    assert client.languages()[0]["code"] == "en"


# ----------------------------------------------------------------------------- refused
BAD = [
    ("no key", {"q": "a b", "source": "en", "target": "de"}, 403, "API key"),
    ("wrong key", _ask("a b", api_key="nope"), 403, "API key"),
    ("malformed JSON", b'{"q": "a', 400, "malformed JSON"),
    ("not an object", b'["q"]', 400, "JSON object"),
    ("q a number", _ask(5), 400, "q must be"),
    ("q a list of numbers", _ask(["a", 3]), 400, "q must be"),
    ("empty q", _ask(""), 400, "missing q"),
    ("no target", {"q": "a", "source": "en", "api_key": KEY}, 400, "missing target"),
    ("another pair", _ask("a", target="fr"), 400, "en -> de"),
    ("html", _ask("<b>a</b>", format="html"), 400, "html"),
    ("too many alternatives", _ask("a", alternatives=9), 400, "between 0 and 3"),
    ("alternatives not a number", _ask("a", alternatives="two"), 400, "whole number"),
    ("invalid UTF-8", b'{"q": "\xff\xfe", "source": "en", "target": "de"}', 400, "not UTF-8"),
    ("over max-chars", _ask("alpha " * 4000), 413, "characters"),
    ("10,000 sentences", _ask(["a"] * 10_000), 413, "sentences"),
]


@pytest.mark.parametrize("name,request_body,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_their_error_and_the_server_goes_on(server, name, request_body, status, message):
    body = request_body if isinstance(request_body, bytes) else json.dumps(request_body).encode()
    code, answer = server.post(body=body)
    assert code == status and message in answer["error"], answer
    assert server.post(_ask("alpha bravo"))[0] == 200


def test_a_10_mb_body_is_refused_before_it_is_read(server):
    """Declared 10 MB: 413 at once, without waiting for the body (the connection is then closed)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 10000000\r\n\r\n" + b"x" * 65536)
        answer = b""
        while b"}" not in answer and (chunk := s.recv(65536)):
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413") and "too large" in answer, answer
    assert server.post(_ask("alpha bravo"))[0] == 200


def test_unknown_routes_and_methods_are_json_errors(server):
    assert server.get("/nowhere")[0] == 404 and "error" in server.get("/nowhere")[1]
    code, body = server.get("/translate")
    assert code == 405 and "error" in body


def test_a_client_that_disconnects_or_stalls_does_not_stop_the_others(server):
    host, port = server.url.removeprefix("http://").split(":")
    stalled = []
    for _ in range(3):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"q\": ")
        stalled.append(s)
    gone = socket.create_connection((host, int(port)))
    gone.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n{\"q\"")
    gone.close()
    assert server.post(_ask("alpha bravo"))[0] == 200  # while three clients hold their requests open
    for s in stalled:
        s.close()
    assert server.get("/health")[0] == 200


def test_memory_stays_flat_over_many_requests(server):
    def burst(n: int) -> None:
        with ThreadPoolExecutor(8) as pool:
            assert set(pool.map(lambda k: server.post(_ask(f"alpha bravo {k % 7}"))[0], range(n))) == {200}

    burst(300)
    before = server.rss_mb()
    burst(1500)
    assert server.rss_mb() - before < 25


# ----------------------------------------------------------------------------- load and stopping
def test_overload_is_429_at_once_and_the_rest_are_answered(reverse_model):
    s = Server(reverse_model, "--max-queue", "6", "--max-batch", "2", "--quiet")
    try:
        ask = {"q": ["alpha bravo charlie delta"] * 3, "source": "en", "target": "de"}
        with ThreadPoolExecutor(40) as pool:
            codes = list(pool.map(lambda _: s.post(ask)[0], range(80)))
        assert set(codes) == {200, 429} and codes.count(429) > 0 and codes.count(200) >= 2
        assert s.post(ask)[0] == 200  # and it recovers
    finally:
        s.stop()


def test_sigterm_answers_what_is_in_flight_and_exits_0(reverse_model):
    s = Server(reverse_model)
    ask = {"q": ["alpha bravo charlie delta echo"] * 40, "source": "en", "target": "de"}
    with ThreadPoolExecutor(6) as pool:
        pending = [pool.submit(s.post, ask) for _ in range(6)]
        time.sleep(0.5)  # the requests are in
        code, log = s.stop()
        answers = [p.result(timeout=60) for p in pending]
    assert code == 0, log
    assert [a for a, _ in answers] == [200] * 6 and all(len(b["translatedText"]) == 40 for _, b in answers)
    with pytest.raises(OSError):
        socket.create_connection(tuple(s.url.removeprefix("http://").split(":")), timeout=2)


def test_sigterm_delivered_to_another_thread_stops_the_server(reverse_model):
    """The kernel may hand a process's SIGTERM to any of its threads, but Python runs the handler in
    the main thread only, between bytecodes: a main thread blocked on a lock without a timeout never
    ran it, and the server did not stop (seen in CI). tgkill sends the signal to one thread."""
    import ctypes

    tgkill = getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)
    if tgkill is None or not Path("/proc/self/task").is_dir():
        pytest.skip("needs Linux's tgkill")
    s = Server(reverse_model, "--quiet")
    assert s.post({"q": "alpha bravo", "source": "en", "target": "de"})[0] == 200
    time.sleep(0.5)  # the model's thread is idle, waiting for work
    others = [int(t) for t in os.listdir(f"/proc/{s.proc.pid}/task") if int(t) != s.proc.pid]
    assert others and tgkill(s.proc.pid, others[0], signal.SIGTERM) == 0
    try:
        assert s.proc.wait(30) == 0, "".join(s.lines)
    except subprocess.TimeoutExpired:
        s.proc.kill()
        raise AssertionError("SIGTERM to a thread other than the main one did not stop the server") from None


# ----------------------------------------------------------------------------- the model's processes
def test_answers_are_the_same_from_several_model_processes(reverse_model, sentences):
    s = Server(reverse_model, "--workers", "2", "--beam", "4", "--quiet")
    try:
        assert len(s.model_processes()) == 2 and "2 model processes x " in "".join(s.lines)
        expected = [t["translation"] for t in _translate_cli(reverse_model, sentences)]
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda q: s.post({"q": q, "source": "en", "target": "de"}), sentences))
        assert [b["translatedText"] for _, b in answers] == expected
    finally:
        assert s.stop()[0] == 0


def test_a_model_process_that_dies_is_replaced(reverse_model):
    s = Server(reverse_model, "--workers", "1", "--max-chars", "100000", "--quiet")
    ask = {"q": "alpha bravo", "source": "en", "target": "de"}
    try:
        expected = s.post(ask)
        assert expected[0] == 200
        [first] = s.model_processes()
        os.kill(first, signal.SIGKILL)  # while idle: replaced before the next batch is sent
        while not _exited(first):
            time.sleep(0.05)
        again = s.post(ask)
        assert again == expected, again
        [second] = s.model_processes()
        assert second != first
        with ThreadPoolExecutor(1) as pool:  # while translating: that batch fails, the next one is answered
            long = pool.submit(s.post, {"q": ["alpha bravo charlie delta echo"] * 2000, "source": "en", "target": "de"})
            busy, deadline = _cpu_ticks(second), time.monotonic() + 60
            while _cpu_ticks(second) < busy + 20:  # it is translating
                assert time.monotonic() < deadline and not long.done(), long.result() if long.done() else "idle"
                time.sleep(0.02)
            os.kill(second, signal.SIGKILL)
            code, body = long.result(timeout=120)
        assert code == 500 and "ended" in body["error"], body
        assert s.post(ask) == expected
    finally:
        assert s.stop()[0] == 0


def test_the_server_stops_when_no_model_process_can_start(reverse_model, tmp_path):
    import shutil

    model = shutil.copytree(reverse_model, tmp_path / "model", ignore=shutil.ignore_patterns("cache"))
    s = Server(model, "--workers", "1", "--quiet")
    shutil.rmtree(model / "checkpoints")
    os.kill(s.model_processes()[0], signal.SIGKILL)
    code, body = s.post({"q": "alpha bravo", "source": "en", "target": "de"})
    assert code == 500 and "no new one could start" in body["error"], body
    assert s.proc.wait(60) == 2
    assert "no new one could start" in "".join(s.lines)


def test_the_other_workers_go_on_when_one_cannot_start_again(reverse_model, tmp_path):
    import shutil

    model = shutil.copytree(reverse_model, tmp_path / "model", ignore=shutil.ignore_patterns("cache"))
    s = Server(model, "--workers", "2", "--quiet")
    shutil.rmtree(model / "checkpoints")
    os.kill(s.model_processes()[0], signal.SIGKILL)
    with ThreadPoolExecutor(2) as pool:  # two at once: each idle worker takes one, or one takes both
        rounds = [list(pool.map(lambda _: s.post({"q": "alpha bravo", "source": "en", "target": "de"}), range(2)))
                  for _ in range(6)]
    failed = [i for i, answers in enumerate(rounds) if any(code != 200 for code, _ in answers)]
    assert len(failed) <= 1, rounds  # the lost worker's one batch, then the other serves alone
    assert all(code == 200 or "no new one could start" in body["error"] for answers in rounds for code, body in answers)
    assert s.stop()[0] == 0


def test_a_model_that_cannot_be_loaded_is_one_line(reverse_model):
    proc = subprocess.run([sys.executable, "-m", "mtkit", "serve", "-m", str(reverse_model), "--port", "0",
                           "--source-lang", "en", "--target-lang", "de", "--checkpoint", "nosuch"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "could not be loaded" in proc.stderr and "nosuch" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_busy_port_and_unknown_languages_are_one_line(reverse_model, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_in_process("serve", "-m", str(reverse_model), "--port", str(port), "--source-lang", "en",
                                      "--target-lang", "de")
    assert code == 2 and "cannot listen" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_in_process("serve", "-m", str(reverse_model), "--source-lang", "english", "--target-lang", "de")
    assert code == 2 and "not a language code" in err, err
    assert os.environ.get("MTKIT_API_KEY") is None


# ----------------------------------------------------------------------------- one request cannot hurt another
def _raw(server: Server, request: bytes, timeout: float = 30) -> bytes:
    """Send raw bytes on a socket of its own; everything the server answers until it closes."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(request)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    return answer


def test_a_lone_surrogate_is_refused_alone_and_the_others_are_answered(server, sentences):
    """`"\\ud800"` is valid JSON but no encoder takes it: 400 for that request, before it reaches a
    batch; every normal request sent with it gets its translation."""
    poison = json.dumps(_ask("alpha \ud800 bravo")).encode()
    assert "\\ud800" in poison.decode()
    with ThreadPoolExecutor(16) as pool:
        normal = [pool.submit(server.post, _ask(s)) for s in sentences * 4]
        poisoned = [pool.submit(server.post, None, poison) for _ in range(5)]
        answers = [f.result() for f in normal]
    assert all(code == 400 and "lone surrogate" in body["error"] for code, body in (p.result() for p in poisoned))
    assert [code for code, _ in answers] == [200] * len(answers)
    for name in ("source", "target"):
        code, body = server.post(body=json.dumps(_ask("alpha", **{name: "e\udc80n"})).encode())
        assert code == 400 and name in body["error"] and "surrogate" in body["error"], body


def test_malformed_json_of_every_kind_is_400(server):
    deep = b'{"q": ' + b"[" * 10_000 + b"]" * 10_000 + b', "source": "en", "target": "de", "api_key": "s3cret"}'
    code, body = server.post(body=deep)
    assert code == 400 and "nested too deeply" in body["error"], body
    huge = b'{"q": "alpha", "source": "en", "target": "de", "api_key": "s3cret", "alternatives": 1' + b"0" * 4400 + b"}"
    code, body = server.post(body=huge)
    assert code == 400 and "malformed JSON" in body["error"], body
    assert server.post(_ask("alpha bravo"))[0] == 200


def test_a_batch_that_fails_for_one_request_answers_the_others():
    """The batcher translates a failed batch again one request at a time: only the request that
    cannot be translated fails."""
    import asyncio

    from mtkit.config import DecodeConfig
    from mtkit.inference.types import Translation
    from mtkit.serving.batcher import Batcher

    class Picky:
        def translate(self, lines, cfg):
            if "poison" in lines:
                raise ValueError("cannot translate poison")
            return [Translation(line.upper(), [], 0.0) for line in lines]

    batcher = Batcher([Picky()], DecodeConfig(beam=1), max_wait=0.05)
    runner = threading.Thread(target=batcher.run, daemon=True)
    runner.start()

    async def ask_all():
        asks = [batcher.translate(["a", "b"]), batcher.translate(["poison"]), batcher.translate(["c"])]
        return await asyncio.gather(*asks, return_exceptions=True)

    try:
        good, bad, other = asyncio.run(ask_all())
    finally:
        batcher.close()
        runner.join(10)
    assert [t.text for t in good] == ["A", "B"] and [t.text for t in other] == ["C"]
    assert isinstance(bad, ValueError)


# ----------------------------------------------------------------------------- paragraphs
def test_a_paragraph_is_translated_sentence_by_sentence_with_its_own_spacing(server, reverse_model):
    sentences = ["alpha bravo charlie.", "delta echo!", "foxtrot golf hotel?", "india juliet kilo.",
                 "lima mike.", "november oscar papa.", "alpha alpha.", "bravo charlie delta.", "echo foxtrot.",
                 "golf hotel india."]
    expected = [t["translation"] for t in _translate_cli(reverse_model, sentences)]
    paragraph = " ".join(sentences[:5]) + "  " + " ".join(sentences[5:])
    code, body = server.post(_ask(paragraph))
    assert code == 200, body
    assert body["translatedText"] == " ".join(expected[:5]) + "  " + " ".join(expected[5:])
    text = sentences[0] + "\r\n" + sentences[1] + "\u2028" + sentences[2] + "\r" + sentences[3] + "\u2029\n\n  " + sentences[4]
    code, body = server.post(_ask(text))
    assert code == 200
    assert body["translatedText"] == (expected[0] + "\r\n" + expected[1] + "\u2028" + expected[2] + "\r" + expected[3]
                                      + "\u2029\n\n  " + expected[4])
    code, body = server.post(_ask(["\x00\x01\x02", "\x07", sentences[0]]))
    assert code == 200 and body["translatedText"] == ["", "", expected[0]]


def test_a_sentence_longer_than_the_model_is_cut_with_a_notice(reverse_model):
    s = Server(reverse_model, "--max-chars", "100000")
    try:
        code, body = s.post({"q": "alpha " * 2000, "source": "en", "target": "de"})
        assert code == 200 and body["translatedText"]
    finally:
        _, log = s.stop()
    assert "longer than the model's" in log and "were cut" in log, log


def test_12000_emoji_within_max_chars_are_not_refused_for_their_encoding(reverse_model):
    s = Server(reverse_model, "--max-chars", "12000", "--quiet")
    try:
        body = json.dumps({"q": "\U0001F600" * 12_000, "source": "en", "target": "de"}).encode()  # \ud83d\ude00 each
        assert len(body) > 6 * 12_000 + 16_384
        code, answer = s.post(body=body)
        assert code == 200, answer
        code, answer = s.post({"q": "\U0001F600" * 12_001, "source": "en", "target": "de"})
        assert code == 413 and "characters" in answer["error"]
    finally:
        s.stop()


# ----------------------------------------------------------------------------- browsers, keys, detection
def test_cors_answers_preflights_and_posts_from_any_origin(server):
    origin = {"Origin": "https://page.example"}
    request = urllib.request.Request(server.url + "/translate", method="OPTIONS", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
        assert "POST" in r.headers["Access-Control-Allow-Methods"]
    request = urllib.request.Request(server.url + "/translate", data=json.dumps(_ask("alpha")).encode(),
                                     headers={**origin, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200 and r.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_origins_can_be_named_or_turned_off(reverse_model):
    for args, origin, allowed in ((["--cors-origin", "https://mine.example"], "https://mine.example", True),
                                  (["--cors-origin", "https://mine.example"], "https://other.example", False),
                                  (["--cors-origin", "none"], "https://mine.example", False)):
        s = Server(reverse_model, *args, "--quiet")
        try:
            request = urllib.request.Request(s.url + "/languages", headers={"Origin": origin})
            with urllib.request.urlopen(request, timeout=30) as r:
                assert (r.headers.get("Access-Control-Allow-Origin") == origin) == allowed, (args, origin)
        finally:
            s.stop()
    code, _, err = run_in_process("serve", "-m", str(reverse_model), "--cors-origin", "page.example")
    assert code == 2 and "not an origin" in err, err


def test_the_api_key_is_compared_from_the_fields_or_the_query_string(server):
    fields = {"q": "alpha", "source": "en", "target": "de"}
    request = urllib.request.Request(server.url + "/translate?api_key=" + KEY, data=json.dumps(fields).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200
    assert server.post(fields)[0] == 403


@pytest.mark.parametrize("env,args", [({}, ["--api-key", ""]), ({"MTKIT_API_KEY": ""}, []),
                                      ({"MTKIT_API_KEY": "  "}, [])])
def test_an_empty_api_key_is_refused_at_start(reverse_model, env, args):
    proc = subprocess.run([sys.executable, "-m", "mtkit", "serve", "-m", str(reverse_model), "--port", "0",
                           "--source-lang", "en", "--target-lang", "de", *args],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert proc.returncode == 2 and "is empty" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_serving_other_machines_without_a_key_is_warned_about(reverse_model):
    """192.0.2.1 (TEST-NET-1) is no address of this machine: nothing is bound, the warning comes first."""
    from mtkit.serving.server import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")
    code, _, err = run_in_process("serve", "-m", str(reverse_model), "--host", "192.0.2.1", "--port", "0",
                                  "--source-lang", "en", "--target-lang", "de")
    assert code == 2 and "warning" in err and "no --api-key" in err and "cannot listen" in err, err


def test_detect_and_source_auto(server):
    lt = pytest.importorskip("libretranslatepy")
    client = lt.LibreTranslateAPI(server.url, api_key=KEY)
    found = client.detect("Ein Mann mit einem orangefarbenen Hut starrt auf etwas.")
    assert found[0]["language"] == "de" and found[0]["confidence"] > 90, found
    code, body = server.post(_ask(["Two young guys with shaggy hair look at their hands.", "hello"]), path="/detect")
    assert code == 200 and body[0][0]["language"] == "en" and len(body) == 2, body
    code, body = server.post(_ask("Ein Mann mit einem orangefarbenen Hut starrt auf etwas.", source="auto"))
    assert code == 400 and "German" in body["error"], body
    code, body = server.post(_ask("alpha bravo", source="auto"))  # unsure: translated as the model's source
    assert code == 200 and body["detectedLanguage"]["language"] == "en", body
    assert server.post({"q": "hello"}, path="/detect")[0] == 403


# ----------------------------------------------------------------------------- connections
def test_headers_that_never_finish_time_out_and_connections_are_bounded(reverse_model):
    s = Server(reverse_model, "--timeout", "1", "--max-connections", "3")
    try:
        started = time.monotonic()
        answer = _raw(s, b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and nothing more
        assert answer.startswith(b"HTTP/1.1 408") and 0.9 < time.monotonic() - started < 10, answer
        host, port = s.url.removeprefix("http://").split(":")
        held = [socket.create_connection((host, int(port))) for _ in range(3)]
        time.sleep(0.2)
        refused = _raw(s, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.startswith(b"HTTP/1.1 503") and b"Too many connections" in refused, refused
        for c in held:
            c.close()
        time.sleep(0.2)
        assert s.get("/health")[0] == 200
    finally:
        _, log = s.stop()
    assert "refused 1 connection(s): 3 are open (--max-connections)" in log, log


def test_a_413_reaches_clients_that_send_the_whole_body_first(server):
    """urllib (and libretranslatepy with it) sends a 10 MB body whole before reading: it reads the
    JSON 413, not a reset connection."""
    code, body = server.post(body=b'{"q": "' + b"a" * 10_000_000 + b'"}')
    assert code == 413 and "too large" in body["error"], body


def test_an_ensemble_is_served_as_mtkit_translate_decodes_it(reverse_model, sentences):
    s = Server(reverse_model, "-m", f"{reverse_model}:last", "--beam", "4", "--quiet")
    try:
        expected = [t["translation"] for t in _translate_cli(reverse_model, sentences[:6], "-m", f"{reverse_model}:last")]
        code, body = s.post({"q": sentences[:6], "source": "en", "target": "de"})
        assert code == 200 and body["translatedText"] == expected
    finally:
        assert s.stop()[0] == 0
