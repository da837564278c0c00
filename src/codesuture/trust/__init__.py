"""Trust: keys and key ids, DSSE envelopes (PAE), in-toto Statements, Sigstore,
revocations, and the load policy that admits overlays."""
