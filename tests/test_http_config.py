"""`http.tls` and `http.bearer_token_file` in riskmon.yaml: each mistake at its place."""

from __future__ import annotations

from pathlib import Path

import pytest
from pki import Pki, make_pki
from test_config import CS, errors, parse

from monitor.config.http_section import token_file_exposure


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "cs.key").write_text("cs-key-value\n")
    (tmp_path / "token").write_text("the-token\n")
    (tmp_path / "token").chmod(0o600)
    return tmp_path


@pytest.fixture
def pki(folder: Path) -> Pki:
    return make_pki(folder / "tls")


def test_tls_and_token_are_read(folder: Path, pki: Pki) -> None:
    config = parse(
        folder,
        "http:\n  bearer_token_file: token\n  tls:\n    cert_file: tls/server.crt\n"
        "    key_file: tls/server.key\n    client_ca_file: tls/ca.crt\n" + CS,
    )
    assert config.http.bearer_token is not None
    assert config.http.bearer_token.get() == "the-token"
    assert "the-token" not in repr(config.http)
    assert config.http.tls is not None
    assert config.http.tls.cert_file == pki.server_cert
    assert config.http.tls.client_ca_file == pki.ca
    assert token_file_exposure(config.http.bearer_token) is None


def test_a_missing_token_file_is_an_error_at_its_place(folder: Path) -> None:
    assert errors(folder, "http:\n  bearer_token_file: nope\n" + CS) == [
        f"riskmon.yaml:2:22: bearer_token_file {folder / 'nope'} does not exist"
    ]


def test_an_empty_token_file_is_an_error(folder: Path) -> None:
    (folder / "token").write_text("\n")
    assert errors(folder, "http:\n  bearer_token_file: token\n" + CS) == [
        f"riskmon.yaml:2:22: bearer_token_file {folder / 'token'} is empty"
    ]


def test_a_token_with_a_space_is_refused_without_showing_it(folder: Path) -> None:
    (folder / "token").write_text("two words\n")
    [problem] = errors(folder, "http:\n  bearer_token_file: token\n" + CS)
    assert problem.startswith("riskmon.yaml:2:22: bearer_token_file ")
    assert "holds a space" in problem
    assert "two words" not in problem


def test_tls_needs_a_cert_and_a_key(folder: Path, pki: Pki) -> None:
    assert errors(folder, "http:\n  tls: {cert_file: tls/server.crt}\n" + CS) == [
        "riskmon.yaml:2:8: missing required key 'key_file' in http tls"
    ]


def test_tls_files_that_do_not_exist(folder: Path, pki: Pki) -> None:
    problems = errors(
        folder,
        "http:\n  tls: {cert_file: tls/server.crt, key_file: tls/server.key, "
        "client_ca_file: tls/nope.crt}\n" + CS,
    )
    assert problems == [
        f"riskmon.yaml:2:78: client_ca_file {folder / 'tls' / 'nope.crt'} does not exist"
    ]


def test_a_key_that_does_not_match_its_certificate(folder: Path, pki: Pki) -> None:
    [problem] = errors(
        folder, "http:\n  tls: {cert_file: tls/server.crt, key_file: tls/client.key}\n" + CS
    )
    assert problem.startswith("riskmon.yaml:2:20: cert_file ")
    assert "are not a matching PEM certificate and private key" in problem
    assert "BEGIN" not in problem


def test_a_client_ca_that_is_not_pem(folder: Path, pki: Pki) -> None:
    (folder / "tls" / "junk.crt").write_text("not a certificate\n")
    [problem] = errors(
        folder,
        "http:\n  tls: {cert_file: tls/server.crt, key_file: tls/server.key, "
        "client_ca_file: tls/junk.crt}\n" + CS,
    )
    assert problem.startswith("riskmon.yaml:2:78: client_ca_file ")
    assert "is not a PEM CA certificate" in problem


def test_unknown_http_keys_get_a_hint(folder: Path) -> None:
    assert errors(folder, "http:\n  bearer_token: x\n" + CS) == [
        "riskmon.yaml:2:3: unknown key 'bearer_token' in http; did you mean 'bearer_token_file'?"
    ]


def test_a_world_readable_token_file_is_pointed_out(folder: Path) -> None:
    (folder / "token").chmod(0o644)
    config = parse(folder, "http:\n  bearer_token_file: token\n" + CS)
    warning = token_file_exposure(config.http.bearer_token)
    assert warning is not None
    assert "readable by every user" in warning
    assert "the-token" not in warning
