"""The benchmark harness's pure parts: wrk scripts and output, payloads, plans, reports, /proc."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import astuple
from pathlib import Path

import numpy as np
import orjson
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import harness, loadgen, payloads, procs, report, servers  # noqa: E402
from bench.run import parse_args  # noqa: E402

WRK_STDOUT = """Running 20s test @ http://127.0.0.1:8080/predictions/mnist
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms  400.00us  12.00ms   90.00%
  4000 requests in 20.00s, 1.00MB read
  Non-2xx or 3xx responses: 10
Requests/sec:    200.00
WRK_RESULT {"duration_us":20000000,"requests":4000,"bytes":1048576,"connect_errors":1,\
"read_errors":2,"write_errors":0,"status_errors":10,"timeouts":3,"p50_us":2000.0,\
"p90_us":2500.0,"p99_us":9000.5,"mean_us":2100.0,"max_us":12000.0}
"""


def test_parse_output_reads_the_result_line() -> None:
    result = loadgen.parse_output(WRK_STDOUT)
    assert result.requests == 4000
    assert result.p99_us == 9000.5
    assert result.errors == 10 + 1 + 2 + 3
    assert result.ok_per_s == pytest.approx((4000 - 10) / 20.0)
    as_dict = result.to_dict()
    assert as_dict["errors"] == 16
    assert as_dict["ok_per_s"] == pytest.approx(199.5)


def test_parse_output_without_result_line_fails() -> None:
    with pytest.raises(loadgen.LoadGenError, match="no result line"):
        loadgen.parse_output("Running 1s test @ http://127.0.0.1:1/\n")


def test_parse_output_with_incomplete_result_fails() -> None:
    with pytest.raises(loadgen.LoadGenError, match="lacks"):
        loadgen.parse_output('WRK_RESULT {"duration_us": 1, "requests": 2}\n')


def test_parse_output_with_no_requests_has_zero_rate() -> None:
    line = WRK_STDOUT.splitlines()[-1].replace('"duration_us":20000000', '"duration_us":0')
    result = loadgen.parse_output(WRK_STDOUT.replace(WRK_STDOUT.splitlines()[-1], line))
    assert result.ok_per_s == 0.0


def test_lua_string_escapes_quotes_backslashes_and_control_bytes() -> None:
    assert loadgen.lua_string('a"b\\c') == '"a\\"b\\\\c"'
    assert loadgen.lua_string("x\ny") == '"x\\010y"'
    assert loadgen.lua_string("é") == '"\\195\\169"'


def test_lua_script_posts_the_body_file_with_headers(tmp_path: Path) -> None:
    body = tmp_path / "body.bin"
    script = loadgen.lua_script(body, {"Content-Type": "image/png", "X-Len": "12"})
    assert f"io.open(\"{body}\", 'rb')" in script
    assert 'wrk.method = "POST"' in script
    assert 'wrk.headers["Content-Type"] = "image/png"' in script
    assert 'wrk.headers["X-Len"] = "12"' in script
    assert "function done(summary, latency, requests)" in script
    assert '"WRK_RESULT "' in script
    for name in loadgen.LoadResult.__dataclass_fields__:
        assert f'"{name}":' in script


def test_wrk_command_uses_one_thread_and_whole_seconds(tmp_path: Path) -> None:
    cmd = loadgen.wrk_command("http://127.0.0.1:1/x", tmp_path / "s.lua", 32, 2.6, timeout_s=10)
    assert cmd[:5] == ["wrk", "-t1", "-c32", "-d3s", "--timeout=10s"]
    assert cmd[-1] == "http://127.0.0.1:1/x"


V2_REQUEST = {
    "id": "x",
    "inputs": [
        {
            "name": "input-0",
            "shape": [1, 2, 2],
            "datatype": "FP32",
            "data": [[[0.0, 0.5], [1.0, -2.25]]],
        }
    ],
}


def test_binary_tensor_body_has_header_then_raw_fp32() -> None:
    body, head_len = payloads.binary_tensor_body(orjson.dumps(V2_REQUEST))
    header = orjson.loads(body[:head_len])
    assert header == {
        "inputs": [
            {
                "name": "input-0",
                "shape": [1, 2, 2],
                "datatype": "FP32",
                "parameters": {"binary_data_size": 16},
            }
        ]
    }
    raw = np.frombuffer(body[head_len:], dtype="<f4")
    assert raw.tolist() == [0.0, 0.5, 1.0, -2.25]


def test_binary_tensor_body_rejects_other_datatypes() -> None:
    request = {"inputs": [{**V2_REQUEST["inputs"][0], "datatype": "BYTES"}]}  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="FP32"):
        payloads.binary_tensor_body(orjson.dumps(request))


def _example(tmp_path: Path) -> Path:
    for name in payloads.EXAMPLE_FILES:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"{}")
    (tmp_path / "requests/v2/mnist_v2_tensor.json").write_bytes(orjson.dumps(V2_REQUEST))
    (tmp_path / "test_data").mkdir()
    (tmp_path / "test_data" / "7.png").write_bytes(b"\x89PNG seven")
    return tmp_path


def test_missing_example_files_lists_what_is_absent(tmp_path: Path) -> None:
    missing = payloads.missing_example_files(tmp_path)
    assert "mnist_handler.py" in missing
    assert "test_data/*.png" in missing
    assert payloads.missing_example_files(_example(tmp_path)) == []


def test_build_payloads_covers_every_row(tmp_path: Path) -> None:
    built = payloads.build_payloads(_example(tmp_path), "mnist")
    assert set(built) == set(harness.ROWS)
    assert built["png"].path == "/predictions/mnist"
    assert built["png"].body == b"\x89PNG seven"  # no 0.png: the first PNG there
    assert built["png"].headers == {"Content-Type": "image/png"}
    assert built["v1"].path == "/v1/models/mnist:predict"
    assert built["v2-json"].path == "/v2/models/mnist/infer"
    binary = built["v2-binary"]
    head_len = int(binary.headers["Inference-Header-Content-Length"])
    assert binary.headers["Content-Type"] == "application/octet-stream"
    assert len(binary.body) == head_len + 16


def test_points_follow_the_plan() -> None:
    plan = harness.Plan()
    assert harness.points(plan, "torchserve") == [("png", 1), ("png", 8), ("png", 32)]
    assert harness.points(plan, "torchserve-1thread") == [("png", 32)]
    assert harness.points(plan, "torchserve-tuned") == [("png", 8), ("png", 32)]
    assert harness.points(plan, "marserve") == [
        ("png", 1),
        ("png", 8),
        ("png", 32),
        ("v1", 8),
        ("v2-json", 8),
        ("v2-binary", 8),
        ("grpc-raw", 8),
    ]
    only_v2 = harness.Plan(rows=("v2-binary",), concurrency=(4,), extra_concurrency=2)
    assert harness.points(only_v2, "torchserve") == []
    assert harness.points(only_v2, "marserve") == [("v2-binary", 2)]
    with pytest.raises(ValueError, match="unknown"):
        harness.points(plan, "triton")


def _row(config: str, c: int, rps: float, p99: float, **extra: object) -> report.Row:
    values: dict[str, object] = {"errors": 0, "p50_ms": p99 / 2, "rss_mib": 500.0, "procs": 3}
    values.update(extra)
    return report.Row(config, config, "png", c, req_per_s=rps, p99_ms=p99, **values)  # type: ignore[arg-type]


def test_evaluate_meets_targets() -> None:
    rows = [
        _row("torchserve", 8, 100.0, 50.0, cold_start_s=4.0, rss_mib=700.0),
        _row("torchserve-1thread", 32, 300.0, 120.0),
        _row("torchserve-tuned", 8, 200.0, 30.0),
        _row("torchserve-tuned", 32, 250.0, 100.0),
        _row("marserve", 8, 350.0, 20.0, cold_start_s=1.5, rss_mib=400.0),
        _row("marserve", 32, 400.0, 90.0, rss_mib=450.0),
        report.Row("marserve", "marserve", "v1", 32, req_per_s=350.0, errors=0),
        report.Row(
            "ceiling", "ceiling", "model-1thread-batch8-x2", 1, req_per_s=500.0, note="2 procs"
        ),
    ]
    checks = report.evaluate(rows)
    assert [check.met for check in checks] == [True] * 8
    assert checks[0].evidence.startswith("3.50x")
    assert checks[2].evidence.startswith("1.75x") and checks[3].evidence.startswith("1.60x")
    assert checks[4].evidence.startswith("80% (400 of 500 images/s")
    assert checks[5].target.startswith("c=32 v1") and checks[5].evidence.startswith("0.88x")
    assert "450 vs 700 MiB" in checks[7].evidence


def test_evaluate_fails_on_low_ratio_higher_p99_or_errors() -> None:
    rows = [
        _row("torchserve", 8, 100.0, 50.0),
        _row("marserve", 8, 400.0, 60.0, cold_start_s=2.5),  # fast enough but p99 higher
        _row("torchserve-1thread", 32, 300.0, 120.0),
        _row("marserve", 32, 500.0, 90.0, errors=4),  # ratio met but with errors
        _row("torchserve-tuned", 8, 300.0, 50.0),  # marserve 1.33x: under 1.5x
        _row("torchserve-tuned", 32, 300.0, 120.0),
        report.Row("marserve", "marserve", "grpc-raw", 8, req_per_s=300.0, errors=0),  # 0.75x
        report.Row("ceiling", "ceiling", "model-1thread-batch8-x2", 1, req_per_s=1000.0),
    ]
    checks = report.evaluate(rows)
    assert checks[0].met is False
    assert checks[1].met is False and "errors present" in checks[1].evidence
    assert checks[2].met is False and checks[2].evidence.startswith("1.33x")
    assert checks[3].met is False and "errors present" in checks[3].evidence
    assert checks[4].met is False and checks[4].evidence.startswith("50%")  # 500 of 1000
    assert checks[5].met is False and checks[5].evidence.startswith("0.75x")
    assert checks[6].met is False  # cold start 2.5 s


def test_evaluate_reports_missing_rows_as_unknown() -> None:
    rows = [
        _row("torchserve", 8, 100.0, 50.0),
        report.Row("marserve", "marserve", "png", 8, note="not available"),
    ]
    assert [check.met for check in report.evaluate(rows)] == [None] * 7


def test_markdown_and_json_outputs(tmp_path: Path) -> None:
    rows = [
        _row("torchserve", 8, 123.456, 50.0, cold_start_s=3.21),
        report.Row(
            "marserve", "marserve", "png", 8, note="not available", detail={"reason": "boom"}
        ),
    ]
    checks = report.evaluate(rows)
    json_path, md_path = tmp_path / "r.json", tmp_path / "r.md"
    report.write_outputs(rows, checks, {"cpu": "2 x test"}, json_path, md_path)
    text = md_path.read_text()
    assert text.startswith("| server | row | c | req/s |")
    assert (
        "| torchserve | png | 8 | 123 | 25.00 | 50.00 | 0 | 500 | 3 | 3.21 | - | - | - |  |" in text
    )
    assert "- marserve: not available: boom" in text
    assert "- cpu: 2 x test" in text
    document = json.loads(json_path.read_text())
    assert document["rows"][1]["note"] == "not available"
    assert document["checks"][0]["met"] is None


def test_noise_warning_names_disturbed_rows() -> None:
    quiet = _row("torchserve", 8, 100.0, 50.0, other_cpu_pct=3.0)
    assert report.noise_warning([quiet]) is None
    noisy = _row("marserve", 8, 100.0, 50.0, other_cpu_pct=42.0)
    warning = report.noise_warning([quiet, noisy])
    assert warning is not None and warning.startswith("1 of 2 rows") and "42%" in warning
    assert report.reasons([quiet, noisy]) == [warning]


def test_parse_stat_handles_parentheses_in_the_command_name() -> None:
    text = "4242 (we(ird) name) S 17 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 98765 0"
    assert procs.parse_stat(text) == procs.Stat("S", 17, 0, 0, 0, 98765)
    text = "7 (x) R 1 " + " ".join(str(n) for n in range(5, 25))
    assert procs.parse_stat(text) == procs.Stat("R", 1, 14, 15, 16 + 17, 22)  # fields 14-17, 22


def test_parse_cpu_line_counts_busy_ticks_only() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    assert procs.parse_cpu_line("cpu  100 2 30 5000 40 5 6 7 0 0") == 100 + 2 + 30 + 5 + 6 + 7


def test_other_cpu_percent_subtracts_server_and_loadgen() -> None:
    before = procs.CpuSample(system_s=100.0, tree_s=10.0, children_s=1.0)
    after = procs.CpuSample(system_s=120.0, tree_s=25.0, children_s=3.0)
    # 20 s busy in 10 s on 2 CPUs; 15 s server + 2 s wrk -> 3 s other = 15 %
    assert procs.other_cpu_percent(before, after, 10.0, 2) == pytest.approx(15.0)
    assert procs.other_cpu_percent(after, after, 0.0, 2) == 0.0


def test_cpu_sample_of_this_process_tree_is_real() -> None:
    sample = procs.CpuSample.take(os.getpid())
    assert sample.system_s > 0 and sample.tree_s > 0
    assert 0 < sample.root_s <= sample.tree_s  # the root's own share of its tree


def test_front_cpu_leaves_out_a_busy_child() -> None:
    burn = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    child = subprocess.Popen([sys.executable, "-c", burn + "\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while procs.cpu_s([child.pid]) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        sample = procs.CpuSample.take(os.getpid())
        assert sample.tree_s - sample.root_s >= 0.3  # the child's CPU is the tree's, not the root's
        assert procs.own_cpu_s(child.pid) >= 0.3
    finally:
        child.kill()
        child.wait(timeout=10)


def test_descendants_walks_the_tree() -> None:
    parents = {1: 0, 10: 1, 11: 10, 12: 10, 13: 11, 20: 1}
    assert sorted(procs.descendants(10, parents)) == [10, 11, 12, 13]
    assert procs.descendants(99, parents) == []


def test_tree_rss_and_kill_all_on_a_real_child() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        deadline = time.monotonic() + 10  # the child may still be inside exec()
        while procs.cmdline(child.pid) != ["sleep", "30"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert procs.cmdline(child.pid) == ["sleep", "30"]
        rss, pids = procs.tree_rss(os.getpid())
        assert child.pid in pids and rss > 0
        known = procs.identify([child.pid])
        assert procs.is_alive(child.pid, known[child.pid])
        assert not procs.is_alive(child.pid, known[child.pid] + 1)  # a reused pid is not ours
        procs.kill_all(known)
        child.wait(timeout=10)
        assert procs.wait_gone(known, timeout_s=5) == {}
        assert procs.cmdline(child.pid) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_properties_bind_loopback_with_token_auth_off() -> None:
    ports = servers.free_ports()
    assert len(set(astuple(ports))) == 5
    text = servers.properties_text(ports, {"default_workers_per_model": "2"})
    assert f"inference_address=http://127.0.0.1:{ports.inference}\n" in text
    assert f"grpc_management_port={ports.grpc_management}\n" in text
    assert "disable_token_authorization=true\n" in text
    assert text.endswith("default_workers_per_model=2\n")


def test_clean_env_drops_tuning_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.setenv("TS_NUMBER_OF_NETTY_THREADS", "9")
    monkeypatch.setenv("MARSERVE_WORKERS", "3")
    env = servers.clean_env({"OMP_NUM_THREADS": "1"})
    assert env["OMP_NUM_THREADS"] == "1"
    assert "TS_NUMBER_OF_NETTY_THREADS" not in env and "MARSERVE_WORKERS" not in env
    assert env["PATH"] == os.environ["PATH"]


def test_cli_defaults_and_lists() -> None:
    args = parse_args([])
    assert args.concurrency == (1, 8, 32)
    assert args.servers == (
        "torchserve",
        "torchserve-1thread",
        "torchserve-tuned",
        "marserve",
        "ceiling",
    )
    args = parse_args(["--concurrency", "2, 4", "--servers", "marserve", "--rows", "v1"])
    assert (args.concurrency, args.servers, args.rows) == ((2, 4), ("marserve",), ("v1",))
    with pytest.raises(SystemExit):
        parse_args(["--servers", "triton"])


def test_tuned_torchserve_gets_the_quiet_log_config(tmp_path: Path) -> None:
    from bench.servers import Ports
    from bench.torchserve import TorchServe, quiet_log_config

    path = quiet_log_config(tmp_path / "run")
    assert '<Logger name="ACCESS_LOG" level="off"' in path.read_text()
    ports = Ports(1, 2, 3, 4, 5)
    tuned = TorchServe(
        "torchserve-tuned", tmp_path, ports, tmp_path, tmp_path, tmp_path / "m.mar", {}, path
    )
    assert tuned.command()[-2:] == ["--log-config", str(path)]
    plain = TorchServe("torchserve", tmp_path, ports, tmp_path, tmp_path, tmp_path / "m.mar")
    assert "--log-config" not in plain.command()


def test_marserve_and_tuned_torchserve_get_the_same_batching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import run

    monkeypatch.setattr(run, "CACHE", tmp_path)
    archive = tmp_path / "store" / "mnist.mar"
    texts = {}
    for config in ("marserve", "torchserve-tuned", "torchserve"):
        run.make_server(config, tmp_path, archive.parent, archive, (8, 5))
        texts[config] = (tmp_path / "runs" / config / "config.properties").read_text()
    for config in ("marserve", "torchserve-tuned"):
        line = next(ln for ln in texts[config].splitlines() if ln.startswith("models="))
        settings = json.loads(line.removeprefix("models="))["mnist"]["1.0"]
        assert settings["batchSize"] == 8 and settings["maxBatchDelay"] == 5
        assert settings["marName"] == "mnist.mar"
        assert settings["minWorkers"] == settings["maxWorkers"] == (os.cpu_count() or 1)
    assert "models=" not in texts["torchserve"]  # TorchServe out of the box
