"""Counts the lines of each Rust example and its Python twin: non-blank,
non-comment lines; Rust doc comments and the #[cfg(test)] module are left
out, as are Python docstrings. Run from the repository root."""
import pathlib
import re


def rust_lines(path):
    text = path.read_text()
    text = text.split("#[cfg(test)]")[0]  # the test module is last
    return [l for l in text.splitlines() if l.strip() and not l.strip().startswith("//")]


def python_lines(path):
    text = re.sub(r'^"""(.|\n)*?"""\n', "", path.read_text())
    return [l for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]


for name in ["kv", "http_hello", "udp_len", "chat", "counter", "log_sink"]:
    rust = len(rust_lines(pathlib.Path(f"examples/{name}.rs")))
    python = len(python_lines(pathlib.Path(f"examples/python/{name}.py")))
    print(f"{name:<11} Rust {rust:>3}  Python {python:>3}  ratio {rust / python:.2f}")
