"""What the MPyC benchmark programs share: which TLS their party connections actually use.

Imported by the programs in this folder (run as scripts, so this folder is on sys.path).
"""

from mpyc.runtime import mpc


def tls_info() -> str | None:
    """TLS version/cipher of an actual MPyC connection of this party (None if plain TCP)."""
    for peer in mpc.parties:
        if peer.pid == mpc.pid or peer.protocol is None:
            continue
        transport = getattr(peer.protocol, 'transport', None)
        if transport is None:
            continue
        ssl_obj = transport.get_extra_info('ssl_object')
        if ssl_obj is None:
            return None
        return f'{ssl_obj.version()} {ssl_obj.cipher()[0]}'
    return None
