"""Command-line interface. Commands parse options, call the domain code and return an exit code.

Exit codes: 0 every applicable rule passed, 1 a rule failed (or none applies),
2 usage error or invalid input, 3 missing or invalid facts, a store or policy
error, or output that cannot be written.
Results go to stdout and diagnostics to stderr, so ``collect | evaluate`` stays clean.

This module imports only what building the command tree needs. Each command
imports its implementation in its body, so that ``--version`` and ``--help``
load no command's code and ``collect`` does not load regorus.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from certposture import __version__
from certposture.errors import CertpostureError, FactsError, InputError
from certposture.report import FORMATS, printable
from certposture.testcommand import test_command
from collector.limits import DEFAULT_MAX_CERTIFICATES_PER_FILE, DEFAULT_MAX_FILE_SIZE

if TYPE_CHECKING:
    from certposture.proofcheck import ProofVerifier
    from certposture.store import Store
    from collector.facts import Facts
    from collector.sources.pem import PemLimits

logger = logging.getLogger(__name__)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Client-certificate device posture check: collect certificate facts, evaluate them with Rego.",
)
ca_app = typer.Typer(no_args_is_help=True, help="Manage the signing certificates (CAs) rules refer to.")
rules_app = typer.Typer(no_args_is_help=True, help="Manage client_certificate_v2 posture rules.")
app.add_typer(ca_app, name="ca")
app.add_typer(rules_app, name="rules")

CA_COLUMNS = ("id", "name", "subject", "expires_on", "fingerprint_sha256")
RULE_COLUMNS = ("id", "name", "type", "operating_system", "certificate_id")


class _State:
    home: str | None = None


_state = _State()


def _store() -> Store:
    from certposture.store import Store, resolve_home

    if _state.home == "":
        raise InputError("--home is empty; give the store directory, or leave the option out")
    return Store(resolve_home(_state.home))


def _format_checker(formats: tuple[str, ...]) -> Callable[[str], str]:
    """Return an option callback that accepts only ``formats``."""

    def check(value: str) -> str:
        if value not in formats:
            raise typer.BadParameter(f"{value!r} is not a format; choose one of: {', '.join(formats)}")
        return value

    return check


_check_format = _format_checker(FORMATS)


FormatOption = Annotated[
    str, typer.Option("--format", callback=_check_format, help="Output format: json or table.")
]


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _global_options(
    home: Annotated[
        str | None,
        typer.Option(help="Store directory; default $CERTPOSTURE_HOME, else the user data directory."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages to stderr.")] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    _state.home = home
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # cryptography warns about RFC 5280 violations such as the negative serial numbers in real
    # CA bundles. The certificates are still collected, so these warnings show only with -v.
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)


# Signing certificates


@ca_app.command("add")
def ca_add(
    file: Annotated[str, typer.Argument(help="PEM or DER certificate file, or - for standard input.")],
    name: Annotated[str | None, typer.Option(help="Display name; default the subject common name.")] = None,
    keep_private_key: Annotated[
        bool,
        typer.Option(help="Keep a private key found in the input, in a file of mode 0600 under the home."),
    ] = False,
    certificate_id: Annotated[
        str | None,
        typer.Option(
            "--id", help="Keep this id (such as Cloudflare's certificate id) instead of a new UUID."
        ),
    ] = None,
) -> None:
    """Store a signing certificate and print its record as JSON."""
    from certposture.files import MAX_SMALL_INPUT, emit, read_input
    from certposture.report import render_json
    from certposture.signing import parse_signing_certificate

    if name is not None and not name.strip():
        raise InputError(
            "--name is empty; give a display name, or leave the option out to use the subject CN"
        )
    parsed = parse_signing_certificate(read_input(file, MAX_SMALL_INPUT), file)
    for warning in parsed.warnings:
        typer.echo(f"warning: {warning}", err=True)
    if parsed.private_key_pem is not None and not keep_private_key:
        typer.echo(
            f"note: {file}: the private key in the input was not stored (see --keep-private-key)", err=True
        )
    record, added = _store().add_signing_certificate(parsed, name, keep_private_key, certificate_id)
    if not added:
        key_note = " (its private key is now kept)" if keep_private_key and parsed.private_key_pem else ""
        typer.echo(
            f"note: certificate already stored as {record['id']}; certificate not added again{key_note}",
            err=True,
        )
    emit(render_json(record).encode())


@ca_app.command("list")
def ca_list(output_format: FormatOption = "json") -> None:
    """List stored signing certificates."""
    from certposture.files import emit
    from certposture.report import render_json, render_records_table

    records = _store().list_signing_certificates()
    if output_format == "table":
        emit(render_records_table(records, CA_COLUMNS).encode())
    else:
        emit(render_json(records).encode())


@ca_app.command("show")
def ca_show(certificate_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print one signing certificate's record."""
    from certposture.files import emit
    from certposture.report import render_json

    emit(render_json(_store().get_signing_certificate(certificate_id)).encode())


@ca_app.command("remove")
def ca_remove(certificate_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Remove a signing certificate that no rule refers to."""
    _store().remove_signing_certificate(certificate_id)
    typer.echo(f"removed signing certificate {certificate_id}", err=True)


# Rules


def _validated_rules(file: str) -> list[dict[str, Any]]:
    from certposture.files import MAX_SMALL_INPUT, read_input
    from certposture.rules import parse_rules_document, validate_rules

    store = _store()
    documents = parse_rules_document(read_input(file, MAX_SMALL_INPUT), file)
    rules, problems = validate_rules(documents, store.signing_certificate_exists)
    if problems:
        for problem in problems[:-1]:
            typer.echo(f"error: {printable(f'{file}: {problem}')}", err=True)
        raise InputError(f"{file}: {problems[-1]}")
    return rules


@rules_app.command("add")
def rules_add(file: Annotated[str, typer.Argument(help="JSON file with one rule or a list, or -.")]) -> None:
    """Validate and store rules; print their ids, one per line."""
    from certposture.files import emit

    rules = _validated_rules(file)
    emit("".join(f"{rule_id}\n" for rule_id in _store().add_rules(rules)).encode())


@rules_app.command("validate")
def rules_validate(
    file: Annotated[str, typer.Argument(help="JSON file with one rule or a list, or -.")],
) -> None:
    """Check rules without storing them."""
    rules = _validated_rules(file)
    typer.echo(f"{file}: {len(rules)} rule(s) valid", err=True)


@rules_app.command("list")
def rules_list(output_format: FormatOption = "json") -> None:
    """List stored rules in evaluation order."""
    from certposture.files import emit
    from certposture.report import render_json, render_records_table

    rules = _store().list_rules()
    if output_format == "table":
        flattened = [{**rule, **{key: rule["input"].get(key) for key in RULE_COLUMNS[3:]}} for rule in rules]
        emit(render_records_table(flattened, RULE_COLUMNS).encode())
    else:
        emit(render_json(rules).encode())


@rules_app.command("show")
def rules_show(rule_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Print one rule."""
    from certposture.files import emit
    from certposture.report import render_json

    emit(render_json(_store().get_rule(rule_id)).encode())


@rules_app.command("remove")
def rules_remove(rule_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Remove a rule."""
    _store().remove_rule(rule_id)
    typer.echo(f"removed rule {rule_id}", err=True)


# Collect and evaluate

RuleOption = Annotated[str | None, typer.Option("--rule", help="Use only this rule (by id).")]
PathOption = Annotated[
    list[str] | None,
    typer.Option(
        "--path", help="PEM/DER file or folder to collect instead of the rules' locations; repeatable."
    ),
]
NssdbOption = Annotated[
    list[str] | None,
    typer.Option(
        "--nssdb", help="NSS sql: database folder to collect instead of the rules' locations; repeatable."
    ),
]
TrustStoreOption = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-store",
        help="Trust store to collect instead of the rules' locations: system (macOS System keychain, "
        "Windows LocalMachine\\My) or user (Windows CurrentUser\\My); repeatable.",
    ),
]
HostnameOption = Annotated[str | None, typer.Option(help="Hostname to report instead of the system's.")]
SerialOption = Annotated[str | None, typer.Option(help="Serial number to report instead of the firmware's.")]
AtOption = Annotated[
    str | None, typer.Option("--at", help="Evaluation time, RFC 3339 (2026-12-04T19:00:00Z); default now.")
]
PolicyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--policy",
        help="Folder (or .rego file) of extra policies loaded beside the shipped ones; repeatable.",
    ),
]
# Taken as text and checked by _pem_limits, so that a bad value is a one-line error like other input errors.
MaxFileSizeOption = Annotated[
    str | None,
    typer.Option(
        "--max-file-size",
        metavar="BYTES",
        help="Maximum size, in bytes, of a PEM or DER file to read; a larger file is reported as a "
        f"collection error and not read. Default {DEFAULT_MAX_FILE_SIZE} (1 MiB).",
    ),
]
MaxCertificatesOption = Annotated[
    str | None,
    typer.Option(
        "--max-certificates-per-file",
        metavar="N",
        help="Maximum number of certificates in one PEM file; a file with more is reported as a collection "
        f"error and none of its certificates or keys is read. Default {DEFAULT_MAX_CERTIFICATES_PER_FILE}.",
    ),
]

ChallengeOption = Annotated[
    str | None,
    typer.Option(
        "--challenge",
        metavar="NONCE",
        help="Respond to this challenge (from `certposture challenge`): sign the nonce and the facts with the "
        "private key of each certificate whose key can be used, and add the proofs to the facts.",
    ),
]
NssPasswordFileOption = Annotated[
    str | None,
    typer.Option(
        "--nssdb-password-file",
        metavar="FILE",
        help="With --challenge: file whose first line is the password of the NSS databases that have one. "
        "Without it, the password is asked on the terminal, if there is one.",
    ),
]
MAX_PASSWORD_FILE = 64 * 1024

_WHOLE_NUMBER = re.compile(r"[0-9]+")


def _positive_integer(option: str, value: str, example: int) -> int:
    """Parse an option value of ASCII digits that is at least 1, or raise InputError naming the option."""
    if not _WHOLE_NUMBER.fullmatch(value):
        raise InputError(
            f"{option} {value!r} is not a positive whole number; give a number such as {example} (the default)"
        )
    try:
        number = int(value)
    except ValueError:
        # int() rejects more than 4300 digits (sys.get_int_max_str_digits).
        raise InputError(
            f"{option} has {len(value)} digits, too many for a limit; give a number such as {example}"
        ) from None
    if number < 1:
        raise InputError(f"{option} is {value}, but it must be at least 1; give a number such as {example}")
    return number


def _pem_limits(max_file_size: str | None, max_certificates_per_file: str | None) -> PemLimits:
    """Build the PEM and DER file limits from the collect options, with the defaults for options left out."""
    from collector.sources.pem import PemLimits

    file_size = DEFAULT_MAX_FILE_SIZE
    if max_file_size is not None:
        file_size = _positive_integer("--max-file-size", max_file_size, DEFAULT_MAX_FILE_SIZE)
    certificates = DEFAULT_MAX_CERTIFICATES_PER_FILE
    if max_certificates_per_file is not None:
        certificates = _positive_integer(
            "--max-certificates-per-file", max_certificates_per_file, DEFAULT_MAX_CERTIFICATES_PER_FILE
        )
    return PemLimits(max_file_size=file_size, max_certificates_per_file=certificates)


def _collect(
    rule: str | None,
    path: list[str] | None,
    nssdb: list[str] | None,
    trust_store: list[str] | None,
    hostname: str | None,
    serial: str | None,
    pem_limits: PemLimits,
    rules: list[dict[str, Any]] | None = None,
    challenge: str | None = None,
    nss_password: str | None = None,
) -> Facts:
    from certposture import posture

    facts = posture.collect_facts(
        _store(),
        rules=rules,
        rule_id=rule,
        paths=path or [],
        nssdbs=nssdb or [],
        trust_stores=trust_store or [],
        hostname=hostname,
        serial_number=serial,
        pem_limits=pem_limits,
        challenge=challenge,
        nss_password=nss_password,
        password_prompt=_password_prompt if challenge is not None else None,
    )
    if facts.proofs is not None:
        typer.echo(
            f"signed {len(facts.proofs.certificates)} proof(s) for challenge {facts.proofs.nonce}", err=True
        )
        for proof_error in facts.proofs.errors:
            typer.echo(
                f"warning: no proof for certificate {proof_error.fingerprint_sha256[:16]}… in "
                f"{printable(proof_error.source.location)}: {printable(proof_error.message)}",
                err=True,
            )
    if facts.errors:
        typer.echo(f'warning: {len(facts.errors)} collection error(s); see "errors" in the facts', err=True)
    for note in facts.notes:
        typer.echo(f"note: {note.source} {note.location}: {note.message}", err=True)
    return facts


def _password_prompt(directory: str) -> str | None:
    """Ask for an NSS database's password on the terminal; None when there is no terminal to ask on."""
    import getpass

    if sys.stdin is None or not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass(f"Password for NSS database {directory}: ")
    except (EOFError, OSError):
        return None


def _read_password_file(path: str | None) -> str | None:
    """Return the first line of ``--nssdb-password-file``, as certutil -f reads it."""
    from certposture.files import read_input

    if path is None:
        return None
    if path == "-":
        raise InputError("--nssdb-password-file - is not supported; give a file readable only by you")
    try:
        raw = read_input(path, MAX_PASSWORD_FILE)
    except InputError as error:
        raise InputError(f"--nssdb-password-file: {error}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(
            f"--nssdb-password-file {path} is not UTF-8 text; write the password as text"
        ) from None
    password = text.split("\n", 1)[0].removesuffix("\r")
    if "\0" in password:
        raise InputError(
            f"--nssdb-password-file {path} contains a NUL character, which NSS cannot take; "
            "write the password alone on the first line"
        )
    if not password:
        raise InputError(
            f"--nssdb-password-file {path} has an empty first line; write the database password on it"
        )
    return password


FACTS_FORMATS = ("json", "opa-input")


@app.command("collect")
def collect_command(
    rule: RuleOption = None,
    path: PathOption = None,
    nssdb: NssdbOption = None,
    trust_store: TrustStoreOption = None,
    hostname: HostnameOption = None,
    serial_number: SerialOption = None,
    max_file_size: MaxFileSizeOption = None,
    max_certificates_per_file: MaxCertificatesOption = None,
    challenge: ChallengeOption = None,
    nssdb_password_file: NssPasswordFileOption = None,
    output: Annotated[
        str | None, typer.Option("--output", "-o", help="Write facts to FILE, not stdout.")
    ] = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            callback=_format_checker(FACTS_FORMATS),
            help='json (the facts document) or opa-input ({"input": facts}, for OPA\'s REST API).',
        ),
    ] = "json",
) -> None:
    """Collect client-certificate facts on this device and print them as JSON."""
    from certposture.files import emit, write_atomically
    from collector.facts import dump_facts

    pem_limits = _pem_limits(max_file_size, max_certificates_per_file)
    if challenge is not None:
        from certposture.challenge import check_nonce_format

        check_nonce_format(challenge, "--challenge")
    elif nssdb_password_file is not None:
        raise InputError("--nssdb-password-file is used only to sign proofs; add --challenge NONCE")
    nss_password = _read_password_file(nssdb_password_file)
    facts = _collect(
        rule,
        path,
        nssdb,
        trust_store,
        hostname,
        serial_number,
        pem_limits,
        challenge=challenge,
        nss_password=nss_password,
    )
    data = dump_facts(facts)
    if output_format == "opa-input":
        data = b'{"input":' + data.rstrip(b"\n") + b"}\n"
    if output is not None:
        write_atomically(output, data)
    else:
        emit(data)


def _report(
    document: dict[str, Any],
    errors: list[CertpostureError],
    output_format: str,
    log_error: CertpostureError | None = None,
) -> None:
    """Print the results and errors, then exit; ``log_error`` (an unwritable decision log) makes the exit code 3."""
    from certposture import posture
    from certposture.files import emit
    from certposture.report import render_json, render_results_table

    if output_format == "table":
        emit(render_results_table(document).encode())
    else:
        emit(render_json(document).encode())
    shown = [*errors, log_error] if log_error is not None else errors
    for error in dict.fromkeys(str(error) for error in shown):
        typer.echo(f"error: {printable(error)}", err=True)
    code = posture.exit_code(document["results"]) if log_error is None else posture.EXIT_ERROR
    if code == posture.EXIT_FAILED and all(r["status"] == "not_applicable" for r in document["results"]):
        typer.echo("note: no rule applies to this device, so none passed", err=True)
    raise typer.Exit(code)


FactsArgument = Annotated[str, typer.Argument(metavar="[FACTS|-]", help="Facts JSON file; default -.")]
RequireProofOption = Annotated[
    str | None,
    typer.Option(
        "--require-proof",
        metavar="NONCE",
        help="Pass a certificate only with a proof of possession for this challenge, issued by "
        "`certposture challenge` and not expired; the certificate's signer is then checked from its DER.",
    ),
]


def _evaluate_file(
    facts_file: str,
    at: str | None,
    rule: str | None,
    policy: list[str] | None,
    explain: bool,
    require_proof: str | None = None,
) -> tuple[dict[str, Any], list[CertpostureError]]:
    verifier = _proof_verifier(require_proof)
    document, errors, _ = _evaluate_facts_file(facts_file, at, rule, policy, explain, verifier)
    return document, errors


def _evaluate_facts_file(
    facts_file: str,
    at: str | None,
    rule: str | None,
    policy: list[str] | None,
    explain: bool,
    verifier: ProofVerifier | None = None,
) -> tuple[dict[str, Any], list[CertpostureError], Facts | None]:
    """Read and evaluate a facts file; return the results, the errors met and the facts (None if unreadable)."""
    from certposture import posture
    from certposture.engine import extra_policy_dirs
    from certposture.files import MAX_FACTS_INPUT, read_input

    evaluated_at = posture.parse_time(at) if at is not None else None
    extra_policies = extra_policy_dirs(policy or [])
    facts = None
    facts_error: CertpostureError | None = None
    try:
        # Unreadable facts fail closed like invalid ones: every rule is reported as an error.
        raw = read_input(facts_file, MAX_FACTS_INPUT)
        facts = posture.parse_facts(raw, facts_file)
    except InputError as read_error:
        facts_error = FactsError(str(read_error))
    except CertpostureError as parse_error:
        facts_error = parse_error
    document, errors = posture.evaluate_facts(
        _store(),
        facts,
        at=evaluated_at,
        rule_id=rule,
        facts_error=facts_error,
        extra_policies=extra_policies,
        explain=explain,
        verifier=verifier,
    )
    return document, errors, facts


def _proof_verifier(require_proof: str | None) -> ProofVerifier | None:
    """Build the verifier for ``--require-proof``, warning on stderr when the nonce cannot be accepted."""
    from certposture import posture

    if require_proof is None:
        return None
    verifier = posture.proof_verifier(_store(), require_proof)
    if verifier.nonce_problem is not None:
        typer.echo(f"warning: {printable(verifier.nonce_problem)}", err=True)
    return verifier


DecisionLogOption = Annotated[
    str | None,
    typer.Option(
        "--decision-log",
        metavar="FILE",
        help="Append an OPA decision-log event (one JSON line) to FILE; a new file gets mode 0600.",
    ),
]
MaskOption = Annotated[
    list[str] | None,
    typer.Option(
        "--mask",
        metavar="POINTER",
        help="JSON pointer under /input or /result to remove from the decision-log event; repeatable.",
    ),
]
MaskDeviceOption = Annotated[
    bool,
    typer.Option(
        "--mask-device",
        help="Remove /input/device/hostname and /input/device/serial_number from the decision-log event.",
    ),
]


def _decision_masks(decision_log: str | None, mask: list[str] | None, mask_device: bool) -> list[str]:
    """Check the decision-log options before evaluating, so a usage error writes nothing."""
    from certposture import decisionlog

    if decision_log is None:
        if mask or mask_device:
            option = "--mask" if mask else "--mask-device"
            raise InputError(f"{option} applies to the decision log only; add --decision-log FILE")
        return []
    if not decision_log.strip():
        raise InputError("--decision-log is empty; give a file to append decision events to")
    return decisionlog.mask_pointers(mask or [], mask_device)


def _log_results(
    document: dict[str, Any],
    facts: Facts | None,
    decision_log: str | None,
    masks: list[str],
    evaluation_ns: int,
    proof_verification: dict[str, Any] | None = None,
) -> CertpostureError | None:
    """Append the results to the posture log and the decision log; return the decision log's error, if any."""
    from certposture import decisionlog, posture

    warning = posture.record_posture_log(_store(), document, facts)
    if warning is not None:
        typer.echo(f"warning: {printable(warning)}", err=True)
    if decision_log is None:
        return None
    metrics = {"timer_certposture_evaluate_ns": evaluation_ns}
    event = decisionlog.build_event(
        facts, document["results"], masks, metrics, proof_verification=proof_verification
    )
    try:
        decisionlog.append_event(decision_log, event)
    except CertpostureError as error:
        return error
    return None


BatchOption = Annotated[
    str | None,
    typer.Option(
        "--batch",
        metavar="FILE|-",
        help="Evaluate a fleet: JSON Lines with one facts document per line; print one result line per device.",
    ),
]
JobsOption = Annotated[
    str | None,
    typer.Option("--jobs", metavar="N", help="With --batch: worker processes to evaluate with; default 1."),
]


def _evaluate_batch(
    source: str,
    *,
    facts_file: str,
    at: str | None,
    rule: str | None,
    policy: list[str] | None,
    jobs: str | None,
    output_format: str,
    decision_log: str | None,
    require_proof: str | None = None,
) -> int:
    """Run ``evaluate --batch``: check the options, evaluate every line, print the summary; return the exit code."""
    from datetime import UTC, datetime

    from certposture import batch, posture
    from certposture.engine import extra_policy_dirs
    from certposture.files import open_input
    from certposture.progress import Progress

    if facts_file != "-":
        raise InputError(f"got FACTS {facts_file} and --batch {source}; give either FACTS or --batch")
    if output_format != "json":
        raise InputError("--batch writes JSON Lines, one result per device; leave out --format")
    if decision_log is not None:
        raise InputError(
            "--decision-log is not supported with --batch; evaluate devices one by one to log decisions"
        )
    workers = 1 if jobs is None else _positive_integer("--jobs", jobs, 1)
    if workers > batch.MAX_JOBS:
        raise InputError(
            f"--jobs {workers} is more than {batch.MAX_JOBS} worker processes; give about the number of CPU cores"
        )
    evaluated_at = posture.parse_time(at) if at is not None else datetime.now(UTC)
    extra_policies = extra_policy_dirs(policy or [])
    store = _store()
    rules, policy_dirs = posture.prepare_rules(store, rule, None, extra_policies)
    proof_settings: dict[str, Any] = {}
    if require_proof is not None:
        from cryptography.hazmat.primitives.serialization import Encoding

        verifier = _proof_verifier(require_proof)
        assert verifier is not None
        proof_settings = {
            "require_proof": require_proof,
            "nonce_problem": verifier.nonce_problem,
            "signer_ders": [
                (signer.id, signer.certificate.public_bytes(Encoding.DER)) for signer in verifier.signers
            ],
        }
    settings = batch.BatchSettings(
        rules=rules,
        signing_certificates=store.list_signing_certificates(),
        evaluated_at=evaluated_at,
        policy_dirs=[str(directory) for directory in policy_dirs],
        **proof_settings,
    )
    stream, size = open_input(source)
    progress = Progress(sys.stderr if sys.stderr is not None and sys.stderr.isatty() else None, size)
    with stream:
        summary = batch.run_batch(stream, settings, jobs=workers, store=store, progress=progress)
    for message in summary.error_messages:
        typer.echo(f"error: {printable(message)}", err=True)
    hidden = summary.messages - len(summary.error_messages)
    if hidden > 0:
        typer.echo(
            f"error: {hidden} more error message(s); each is in its device's record under errors", err=True
        )
    if summary.warning is not None:
        typer.echo(f"warning: {printable(summary.warning)}", err=True)
    if summary.blank_lines:
        typer.echo(f"note: {summary.blank_lines} blank line(s) skipped", err=True)
    if summary.devices == 0:
        typer.echo(
            f"error: no facts documents in {source}; give JSON Lines with one document per line", err=True
        )
        return posture.EXIT_ERROR
    typer.echo(
        f"evaluated {summary.devices} device(s): {summary.passed} passed, {summary.failed} failed, "
        f"{summary.errors} with errors",
        err=True,
    )
    return summary.exit_code


@app.command("evaluate")
def evaluate_command(
    facts_file: FactsArgument = "-",
    at: AtOption = None,
    rule: RuleOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "json",
    decision_log: DecisionLogOption = None,
    mask: MaskOption = None,
    mask_device: MaskDeviceOption = False,
    batch: BatchOption = None,
    jobs: JobsOption = None,
    require_proof: RequireProofOption = None,
) -> None:
    """Evaluate facts against the stored rules, print the results and append them to the posture log."""
    if batch is not None:
        if mask or mask_device:
            raise InputError(
                "--mask and --mask-device apply to the decision log, which --batch does not write"
            )
        raise typer.Exit(
            _evaluate_batch(
                batch,
                facts_file=facts_file,
                at=at,
                rule=rule,
                policy=policy,
                jobs=jobs,
                output_format=output_format,
                decision_log=decision_log,
                require_proof=require_proof,
            )
        )
    if jobs is not None:
        raise InputError("--jobs applies to --batch only; add --batch FILE, or leave out --jobs")
    masks = _decision_masks(decision_log, mask, mask_device)
    started = time.perf_counter_ns()
    verifier = _proof_verifier(require_proof)
    document, errors, facts = _evaluate_facts_file(facts_file, at, rule, policy, False, verifier)
    evaluation_ns = time.perf_counter_ns() - started
    verification = None
    if decision_log is not None and verifier is not None and facts is not None:
        verification = verifier.verify(facts)
    log_error = _log_results(document, facts, decision_log, masks, evaluation_ns, verification)
    _report(document, errors, output_format, log_error)


PROOF_FORMATS = ("opa-input", "json")


@app.command("verify-proofs")
def verify_proofs_command(
    require_proof: Annotated[
        str,
        typer.Option(
            "--require-proof",
            metavar="NONCE",
            help="The challenge the proofs must respond to, issued by `certposture challenge`. Required.",
        ),
    ],
    facts_file: FactsArgument = "-",
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            callback=_format_checker(PROOF_FORMATS),
            help='opa-input ({"input": facts without proofs, with proof_verification}, for an OPA server '
            "whose bundle has --require-proof) or json (the proof_verification object alone).",
        ),
    ] = "opa-input",
) -> None:
    """Verify the proofs of possession in facts and print the verdicts for an OPA server.

    Exit 0 once the output is written, whatever the verdicts: the policy
    decides, and a certificate without a key (a CA) has no proof but need not fail.
    """
    from certposture import posture
    from certposture.engine import policy_input
    from certposture.files import MAX_FACTS_INPUT, emit, read_input
    from certposture.report import render_json

    verifier = _proof_verifier(require_proof)
    assert verifier is not None
    try:
        raw = read_input(facts_file, MAX_FACTS_INPUT)
    except InputError as error:
        raise FactsError(str(error)) from None
    facts = posture.parse_facts(raw, facts_file)
    verification = verifier.verify(facts)
    if output_format == "json":
        emit(render_json(verification).encode())
    else:
        emit(render_json({"input": policy_input(facts, verification)}).encode())
    verdicts = list(verification["certificates"].values())
    verified = sum(1 for verdict in verdicts if verdict["status"] == "verified")
    typer.echo(f"{verified} of {len(verdicts)} certificate(s) have a verified proof", err=True)


EXPLAIN_FORMATS = ("text", "json")


@app.command("explain")
def explain_command(
    facts_file: FactsArgument = "-",
    rule: RuleOption = None,
    at: AtOption = None,
    policy: PolicyOption = None,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            callback=_format_checker(EXPLAIN_FORMATS),
            help="text, or json (the results with a conditions list in each candidate).",
        ),
    ] = "text",
    require_proof: RequireProofOption = None,
) -> None:
    """Show why each rule passes or fails: every candidate, every condition, expected beside actual."""
    from certposture import posture
    from certposture.explain import render_explanation
    from certposture.files import emit
    from certposture.report import render_json

    document, errors = _evaluate_file(facts_file, at, rule, policy, True, require_proof)
    if output_format == "json":
        emit(render_json(document).encode())
    else:
        emit(render_explanation(document).encode())
    for error in dict.fromkeys(str(error) for error in errors):
        typer.echo(f"error: {printable(error)}", err=True)
    raise typer.Exit(posture.exit_code(document["results"]))


CHALLENGE_FORMATS = ("json", "nonce")


@app.command("challenge")
def challenge_command(
    ttl: Annotated[
        str,
        typer.Option(
            "--ttl",
            metavar="DURATION",
            help="How long devices may respond to the nonce: 1s to 1d; default 5m.",
        ),
    ] = "5m",
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            callback=_format_checker(CHALLENGE_FORMATS),
            help="json ({nonce, issued_at, expires_at}) or nonce (the nonce alone, for a shell variable).",
        ),
    ] = "json",
) -> None:
    """Issue a fresh nonce for proof of possession, stored with its expiry; print it."""
    from certposture.challenge import issue_challenge, parse_ttl
    from certposture.files import emit
    from certposture.report import render_json

    challenge = issue_challenge(_store(), parse_ttl(ttl))
    if output_format == "nonce":
        emit(f"{challenge.nonce}\n".encode())
    else:
        emit(render_json(challenge.document()).encode())


LOG_FORMATS = ("json", "jsonl", "table")
LOG_COLUMNS = ("timestamp", "rule_id", "rule_name", "status", "device_name", "serial_number")


@app.command("logs")
def logs_command(
    rule: Annotated[str | None, typer.Option("--rule", help="Only records of this rule id.")] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            metavar="NAME",
            help="Only records of this device name (hostname); ASCII case ignored.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DURATION",
            help="Only records evaluated at most this long before now: a number and s, m, h or d (30m, 12h, 7d).",
        ),
    ] = None,
    failed: Annotated[
        bool,
        typer.Option(
            "--failed", help="Only records of rules that did not pass (failed, error, not applicable)."
        ),
    ] = False,
    output_format: Annotated[
        str,
        typer.Option(
            "--format",
            callback=_format_checker(LOG_FORMATS),
            help="json (one array), jsonl (one record per line) or table.",
        ),
    ] = "json",
    retention: Annotated[
        int | None,
        typer.Option(
            "--retention",
            metavar="N",
            min=0,
            help="Keep at most N records (default 100000): delete the oldest beyond N now and after every "
            "evaluation. Lists nothing.",
        ),
    ] = None,
) -> None:
    """List the posture log: one record per rule result of each evaluate and check, oldest first."""
    import orjson

    from certposture import posturelog
    from certposture.files import emit
    from certposture.report import render_json, render_records_table

    for option, value in (("--rule", rule), ("--device", device), ("--since", since)):
        if value is not None and not value.strip():
            raise InputError(f"{option} is empty; give a value, or leave the option out")
    if retention is not None:
        if rule is not None or device is not None or since is not None or failed:
            raise InputError(
                "--retention sets the log's size and lists nothing; run it without --rule, --device, --since "
                "and --failed"
            )
        deleted = _store().set_posture_log_retention(retention)
        typer.echo(f"posture log keeps at most {retention} record(s); deleted {deleted}", err=True)
        return

    since_time = posturelog.since_time(posturelog.parse_duration(since)) if since is not None else None
    records = posturelog.query(_store(), rule_id=rule, device=device, since=since_time, failed_only=failed)
    if output_format == "jsonl":
        emit(b"".join(orjson.dumps(record) + b"\n" for record in records))
    elif output_format == "table":
        rows = [{**record, "status": (record.get("received") or {}).get("status")} for record in records]
        table = render_records_table(rows, LOG_COLUMNS)
        emit(f"{table}{len(records)} record(s)\n".encode())
    else:
        emit(render_json(records).encode())


@app.command("check")
def check_command(
    rule: RuleOption = None,
    path: PathOption = None,
    nssdb: NssdbOption = None,
    trust_store: TrustStoreOption = None,
    hostname: HostnameOption = None,
    serial_number: SerialOption = None,
    max_file_size: MaxFileSizeOption = None,
    max_certificates_per_file: MaxCertificatesOption = None,
    at: AtOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "json",
    decision_log: DecisionLogOption = None,
    mask: MaskOption = None,
    mask_device: MaskDeviceOption = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            help="Run each rule again every `schedule` (default 5m, minimum 1m) and append the results "
            "to the posture log, until SIGTERM (exit 0) or SIGINT (exit 130). Each round prints its "
            "results (json: one line) and a summary line on stderr. "
            "Testing aid: CERTPOSTURE_WATCH_TIME_SCALE=0.001 makes 1m last 60 ms.",
        ),
    ] = False,
    watch_rounds: Annotated[
        int | None,
        typer.Option("--watch-rounds", min=1, hidden=True, help="Testing aid: stop --watch after N rounds."),
    ] = None,
) -> None:
    """Collect facts on this device, evaluate them in one process and append the results to the posture log."""
    from certposture import posture
    from certposture.engine import extra_policy_dirs
    from certposture.watch import watch_check

    if watch_rounds is not None and not watch:
        raise InputError("--watch-rounds applies only with --watch")
    pem_limits = _pem_limits(max_file_size, max_certificates_per_file)
    if watch:
        if decision_log is not None or mask or mask_device:
            raise InputError("--decision-log, --mask and --mask-device cannot be used with --watch")
        raise typer.Exit(
            watch_check(
                _store(),
                rule_id=rule,
                paths=path or [],
                nssdbs=nssdb or [],
                trust_stores=trust_store or [],
                hostname=hostname,
                serial_number=serial_number,
                at=at,
                policies=policy or [],
                output_format=output_format,
                max_rounds=watch_rounds,
                pem_limits=pem_limits,
            )
        )
    evaluated_at = posture.parse_time(at) if at is not None else None
    extra_policies = extra_policy_dirs(policy or [])
    masks = _decision_masks(decision_log, mask, mask_device)
    # Read the rules once, so that a rule another process adds meanwhile is not evaluated
    # against facts collected without its locations.
    rules = posture.select_rules(_store(), rule)
    facts = _collect(rule, path, nssdb, trust_store, hostname, serial_number, pem_limits, rules)
    started = time.perf_counter_ns()
    document, errors = posture.evaluate_facts(
        _store(), facts, at=evaluated_at, rule_id=rule, extra_policies=extra_policies, rules=rules
    )
    evaluation_ns = time.perf_counter_ns() - started
    log_error = _log_results(document, facts, decision_log, masks, evaluation_ns)
    _report(document, errors, output_format, log_error)


# Decisions


@app.command("decide")
def decide_command(
    identity: Annotated[
        str,
        typer.Option(
            "--identity", help='Identity JSON file: {"email", "groups", "ip", "certificate"}, or -.'
        ),
    ],
    posture_file: Annotated[
        str,
        typer.Argument(
            metavar="[FACTS|RESULTS|-]",
            help="Facts from collect, or results from evaluate; default -.",
        ),
    ] = "-",
    access: Annotated[
        str | None, typer.Option("--access", help="Access policies JSON file (Cloudflare's Access shape).")
    ] = None,
    gateway: Annotated[
        str | None, typer.Option("--gateway", help="Gateway rules JSON file (Cloudflare's Gateway shape).")
    ] = None,
    at: AtOption = None,
    output_format: FormatOption = "json",
) -> None:
    """Decide one request with Access policies or Gateway rules, from its identity and device posture."""
    from certposture import decide, posture
    from certposture.files import MAX_FACTS_INPUT, MAX_SMALL_INPUT, emit, read_input
    from certposture.report import render_json

    if (access is None) == (gateway is None):
        raise InputError("give exactly one of --access FILE and --gateway FILE")
    if identity == "-" and posture_file == "-":
        raise InputError("--identity and the posture input both read standard input; give one as a file")
    decided_at = posture.parse_time(at) if at is not None else None
    request = decide.load_identity(read_input(identity, MAX_SMALL_INPUT), identity)
    access_policies = None
    gateway_config = None
    if access is not None:
        access_policies = decide.load_access_policies(read_input(access, MAX_SMALL_INPUT), access)
    elif gateway is not None:
        gateway_config = decide.load_gateway(read_input(gateway, MAX_SMALL_INPUT), gateway)
    result = decide.decide_request(
        _store(),
        request,
        read_input(posture_file, MAX_FACTS_INPUT),
        posture_file,
        access_policies=access_policies,
        gateway=gateway_config,
        at=decided_at,
    )
    if output_format == "table":
        emit(decide.render_decision_table(result).encode())
    else:
        emit(render_json(result).encode())
    raise typer.Exit(decide.exit_code(result))


@app.command("bundle")
def bundle_command(
    output: Annotated[
        str, typer.Option("--output", "-o", help="Bundle file to write (.tar.gz), or - for stdout.")
    ],
    policy: PolicyOption = None,
    revision: Annotated[
        str | None, typer.Option(help="Revision in the manifest; default a digest of the bundle's content.")
    ] = None,
    require_proof: Annotated[
        bool,
        typer.Option(
            "--require-proof",
            help="Set require_proof in the data: a certificate passes only with a verified proof of "
            "possession in input.proof_verification, which a trusted step must add.",
        ),
    ] = False,
) -> None:
    """Write an OPA bundle: the policies, the stored rules and the signing-certificate data."""
    from certposture.bundle import build_store_bundle
    from certposture.engine import check_policies, extra_policy_dirs
    from certposture.files import emit, write_atomically

    if not output.strip():
        raise InputError("--output is empty; give the bundle's file name, or - for standard output")
    extra_policies = extra_policy_dirs(policy or [])
    if extra_policies:
        check_policies(extra_policies)
    data = build_store_bundle(_store(), extra_policies, revision, require_proof=require_proof)
    if output == "-":
        emit(data)
    else:
        write_atomically(output, data)
        typer.echo(f"wrote OPA bundle {output} ({len(data)} bytes)", err=True)


app.command("test")(test_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting, so tests can call it in-process."""
    arguments = sys.argv[1:] if argv is None else argv
    for argument in arguments:
        try:
            argument.encode("utf-8")
        except UnicodeEncodeError:
            # Results and facts are JSON, which cannot carry bytes that are not UTF-8.
            escaped = argument.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            typer.echo(
                f"error: argument '{printable(escaped)}' is not valid UTF-8; pass UTF-8 text", err=True
            )
            return 2

    command = typer.main.get_command(app)
    try:
        result = command.main(args=arguments, prog_name="certposture", standalone_mode=False)
    except CertpostureError as error:
        typer.echo(f"error: {printable(str(error))}", err=True)
        return error.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as error:
        # Usage errors (unknown option, missing argument, bad value) print usage and a one-line reason.
        show = getattr(error, "show", None)
        if callable(show):
            show()
        else:
            typer.echo(f"error: {error.format_message()}", err=True)
        return 2
    except typer.Exit as error:
        return error.exit_code
    except Exception as error:
        # A bug or an unexpected platform failure. Exit 3, as for any other error that must
        # fail closed, because 1 would read as "a rule failed".
        logger.debug("unexpected error", exc_info=True)
        typer.echo(
            f"error: unexpected {type(error).__name__}: {printable(str(error))}; "
            "run with --verbose for the traceback and report it as a bug",
            err=True,
        )
        return 3
    return result if isinstance(result, int) else 0
