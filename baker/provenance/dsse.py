"""DSSE envelopes (secure-systems-lab/dsse v1): the signature covers the PAE encoding of the payload
type and bytes, never the JSON around them, so re-serialising an envelope cannot change what was signed."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.exceptions import InvalidSignature

from baker.errors import BakerError
from baker.provenance.keys import PublicKey, SigningKey

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


class EnvelopeError(BakerError):
    pass


def pae(payload_type: str, payload: bytes) -> bytes:
    """PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body, LEN in ASCII decimal bytes."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def sign(payload: bytes, key: SigningKey, payload_type: str = INTOTO_PAYLOAD_TYPE) -> dict[str, Any]:
    sig = key.private.sign(pae(payload_type, payload))
    return {"payloadType": payload_type, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": key.public.keyid, "sig": base64.b64encode(sig).decode()}]}


def payload_of(envelope: Any) -> tuple[str, bytes]:
    if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), str) \
            or not isinstance(envelope.get("payloadType"), str) \
            or not isinstance(envelope.get("signatures"), list):
        raise EnvelopeError("not a DSSE envelope (needs payloadType, payload and signatures)")
    try:
        return envelope["payloadType"], base64.b64decode(envelope["payload"], validate=True)
    except binascii.Error as e:
        raise EnvelopeError(f"DSSE payload is not base64: {e}") from e


def verify(envelope: Any, trusted: list[PublicKey]) -> tuple[bytes, PublicKey]:
    """The payload and the trusted key whose signature verified; EnvelopeError if none does."""
    payload_type, payload = payload_of(envelope)
    message = pae(payload_type, payload)
    seen: list[str] = []
    for s in envelope["signatures"]:
        if not isinstance(s, dict) or not isinstance(s.get("sig"), str):
            continue
        seen.append(str(s.get("keyid", "?")))
        try:
            sig = base64.b64decode(s["sig"], validate=True)
        except binascii.Error:
            continue
        for key in trusted:
            if s.get("keyid") not in (None, "", key.keyid):
                continue
            try:
                key.key.verify(sig, message)
                return payload, key
            except InvalidSignature:
                continue
    raise EnvelopeError(f"no valid signature from a trusted key (signed by: {', '.join(seen) or 'nobody'}; "
                        f"trusted: {', '.join(k.keyid for k in trusted) or 'none'})")
