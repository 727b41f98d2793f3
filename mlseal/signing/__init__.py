"""Signing: keys, DSSE envelopes, artifact digests, OMS bundles and trust policy.

    >>> from mlseal.signing.keys import LocalKeySigner
    >>> from mlseal.signing import dsse
    >>> signer = LocalKeySigner.generate()
    >>> env = dsse.sign(signer, "application/example", b"hello")
    >>> dsse.verify(dsse.parse(env), [signer.verifier()]).payload
    b'hello'
"""

__all__: list[str] = []  # a namespace: import from the modules (keys, dsse, digest, bundle, trust, ...)
