"""The run's tamper-evident manifest: every input and output by SHA-256, chained into one
digest and signed with the site's Ed25519 key; ``faceage-audit verify RUN_DIR`` re-hashes it
all (never trusting the hash cache) and checks the signature.

The manifest (``runs/<run_id>/manifest.json``) lists the cohort's ``cohort.yaml``, its
manifest and every image, each model's checkpoint, the config digest, the code version and
environment, and the run's artifacts (report, verdict.json, evidently's HTML). Its digest is
the SHA-256 of that list as canonical JSON; the signature is over the digest. The private key
lives outside the repository and the database (``$FACEAGE_AUDIT_SIGNING_KEY`` or
``~/.config/faceage-audit/signing.key``, created on first use, mode 0600); the manifest
carries the public key, and ``verify`` also says whether it is this site's key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from audit.data.hashing import sha256_file
from audit.data.privacy import pseudonym, site_file

MANIFEST = "manifest.json"


def signing_key_file() -> Path:

    return site_file("FACEAGE_AUDIT_SIGNING_KEY", "signing.key")


def _private_key(create: bool = True):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path = signing_key_file()
    if path.is_file():
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not create:
        return None
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return key


def _public_hex(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        key.public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        .hex()
    )


def _digest(entries: dict) -> str:
    text = json.dumps(entries, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def build_manifest(run: dict, cohort, models: list, out_dir: Path, artifacts) -> Path:
    """Write and sign ``runs/<run_id>/manifest.json``; return its path."""
    root = Path(cohort.root)
    files = {
        "cohort.yaml": sha256_file(root / "cohort.yaml"),
        str(
            Path(cohort.manifest_path).resolve().relative_to(root.resolve())
            if Path(cohort.manifest_path).resolve().is_relative_to(root.resolve())
            else Path(cohort.manifest_path).resolve()
        ): cohort.manifest_sha256,
    }
    images_root = Path(cohort.images_root).resolve()
    images_root = (
        images_root.relative_to(root.resolve())
        if images_root.is_relative_to(root.resolve())
        else images_root
    )
    # Image paths usually carry patient ids: the manifest names each image by the keyed
    # pseudonym of its path under the images root; `verify` recomputes it on site.
    images = {pseudonym(str(rel)): digest for rel, digest in sorted(cohort.image_sha256.items())}
    model_files = [
        {"name": m.name, "path": str(Path(m.checkpoint).resolve()), "sha256": m.checkpoint_digest()}
        for m in models
        if getattr(m, "checkpoint", None) is not None and Path(m.checkpoint).is_file()
    ]
    entries = {
        "run_id": run["run_id"],
        "cohort_path": str(root.resolve()),
        "cohort_sha256": run["cohort_sha256"],
        "cohort_files": files,
        "images_root": str(images_root),
        "images": images,
        "models": model_files,
        "config_sha256": run["config_sha256"],
        "code_version": run["code_version"],
        "environment": run["environment"],
        "artifacts": {r["path"]: r["sha256"] for r in artifacts},
    }
    signed = sign_document(entries, "manifest")
    path = Path(out_dir) / "runs" / run["run_id"] / MANIFEST
    path.write_text(json.dumps(signed, indent=1, sort_keys=True, default=str))
    return path


def sign_document(entries: dict, key_name: str) -> dict:
    """``entries`` signed with this site's Ed25519 key: ``{algorithm, digest, signature,
    public_key, <key_name>: entries}``, the digest the SHA-256 of their canonical JSON."""
    digest = _digest(entries)
    key = _private_key()
    return {
        "algorithm": f"Ed25519 over the SHA-256 of the canonical JSON of `{key_name}`",
        "digest": digest,
        "signature": key.sign(bytes.fromhex(digest)).hex(),
        "public_key": _public_hex(key),
        key_name: entries,
    }


def signature_problems(doc: dict, key_name: str, where: str) -> list[str]:
    """What is wrong with a document :func:`sign_document` wrote (empty: intact): its
    contents against its digest, and the signature against the public key it names."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    problems = []
    if _digest(doc[key_name]) != doc["digest"]:
        problems.append(f"{where}: its contents do not match its digest (edited)")
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(doc["public_key"])).verify(
            bytes.fromhex(doc["signature"]), bytes.fromhex(doc["digest"])
        )
    except (InvalidSignature, ValueError):
        problems.append(f"{where}: the signature does not match the digest")
    return problems


def verify_run(run_dir: str | Path) -> list[str]:
    """Every problem found re-hashing the run (empty: intact). Hashes are recomputed from the
    files themselves; no cache is consulted."""

    run_dir = Path(run_dir)
    doc = json.loads((run_dir / MANIFEST).read_text())
    entries = doc["manifest"]
    problems = signature_problems(doc, "manifest", str(run_dir / MANIFEST))
    site = _private_key(create=False)
    if site is not None and _public_hex(site) != doc["public_key"]:
        problems.append("the manifest was signed with another key than this site's")
    root = Path(entries["cohort_path"])
    out_dir = run_dir.parent.parent

    def check(path: Path, expected: str, what: str) -> None:
        if not path.is_file():
            problems.append(f"{path}: missing ({what})")
        elif sha256_file(path) != expected:
            problems.append(f"{path}: changed since the run ({what})")

    for rel, digest in entries["cohort_files"].items():
        check(root / rel, digest, "cohort file")
    images_root = root / entries.get("images_root", ".")
    on_disk = (
        {
            pseudonym(str(p.relative_to(images_root))): p
            for p in images_root.rglob("*")
            if p.is_file()
        }
        if images_root.is_dir()
        else {}
    )
    for name, digest in entries["images"].items():
        if name not in on_disk:
            problems.append(
                f"image {name} under {images_root}: missing, renamed, or the "
                "manifest was made with another site's pseudonym key"
            )
        else:
            check(on_disk[name], digest, f"image {name}")
    for m in entries["models"]:
        check(Path(m["path"]), m["sha256"], f"checkpoint of model {m['name']}")
    for rel, digest in entries["artifacts"].items():
        check(out_dir / rel, digest, "run artifact")
    return problems
