"""``marserve explain``: ask a running server to explain images or texts and save the PNG."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import click

DEFAULT_URL = "http://127.0.0.1:8080"


def explain_request(
    paths: tuple[Path, ...],
    target: int | None,
    n_steps: int | None,
    texts: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The KServe v1 ``:explain`` body: one instance per image, then per text, options on each."""
    instances = []
    data = [base64.b64encode(path.read_bytes()).decode("ascii") for path in paths]
    for value in [*data, *texts]:
        instance: dict[str, Any] = {"data": value}
        if target is not None:
            instance["target"] = target
        if n_steps is not None:
            instance["n_steps"] = n_steps
        instances.append(instance)
    return {"instances": instances}


def _bearer(token: str | None, key_file: Path | None) -> str | None:
    if token:
        return token
    if key_file is None:
        return None
    try:
        keys = json.loads(key_file.read_text())
        return str(keys["inference"]["key"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"cannot read the inference key from {key_file}: {exc}") from exc


def _error_text(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
    if isinstance(doc, dict):
        return str(doc.get("error") or doc.get("message") or doc)[:500]
    return str(doc)[:500]


def fetch_heatmap(
    url: str, model: str, body: dict[str, Any], bearer: str | None, timeout: float
) -> bytes:
    """POST the explain request asking for ``image/png``; the PNG bytes, or a ClickException."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise click.ClickException(f"--url must be an http(s) address, got {url!r}")
    endpoint = f"{url.rstrip('/')}/v1/models/{urllib.parse.quote(model, safe='')}:explain"
    headers = {"Content-Type": "application/json", "Accept": "image/png"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        endpoint, data=json.dumps(body).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            content_type = response.headers.get("Content-Type", "")
            payload: bytes = response.read()
    except urllib.error.HTTPError as exc:
        raise click.ClickException(f"HTTP {exc.code}: {_error_text(exc.read())}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise click.ClickException(f"cannot reach {url}: {exc}") from exc
    if not content_type.startswith("image/png"):
        raise click.ClickException(f"expected a PNG from the server, got {content_type!r}")
    return payload


@click.command()
@click.option("--model", required=True, help="Model name, as served.")
@click.option(
    "--input",
    "inputs",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Image to explain (repeat for several; they are drawn side by side).",
)
@click.option(
    "--text",
    "texts",
    multiple=True,
    help="Text to explain, for text models (repeat for several; drawn one under another).",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Where to write the heatmap PNG.",
)
@click.option("--url", default=DEFAULT_URL, show_default=True, help="Inference address.")
@click.option("--target", type=click.IntRange(min=0), help="Class to explain (default: predicted).")
@click.option("--n-steps", type=click.IntRange(min=1), help="Integration steps (model default).")
@click.option("--token", help="Inference token (token authorization).")
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="key_file.json to read the inference token from.",
)
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait.")
def explain(
    model: str,
    inputs: tuple[Path, ...],
    texts: tuple[str, ...],
    out: Path,
    url: str,
    target: int | None,
    n_steps: int | None,
    token: str | None,
    key_file: Path | None,
    timeout: float,
) -> None:
    """Explain images with a running server (integrated gradients); save the heatmap as a PNG.

    Red marks pixels (or words, with --text) that raise the explained class's score, blue those
    that lower it.
    """
    if not inputs and not texts:
        raise click.UsageError("give at least one --input image or --text")
    body = explain_request(inputs, target, n_steps, texts)
    picture = fetch_heatmap(url, model, body, _bearer(token, key_file), timeout)
    out.write_bytes(picture)
    items = [(len(inputs), "image"), (len(texts), "text")]
    shown = ", ".join(f"{n} {what}{'s' if n != 1 else ''}" for n, what in items if n)
    click.echo(f"wrote {out} ({shown})")
