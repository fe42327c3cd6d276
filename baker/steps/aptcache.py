"""--apt-cache: serve the guest's apt downloads from a cache on the host (nightly rebuilds)."""

from __future__ import annotations

from baker.errors import BakerError
from baker.httpserver import GUEST_HOST_IP
from baker.state import BuildState


class UseAptCache:
    name = "apt-cache"

    def run(self, s: BuildState) -> None:
        from baker.aptcache import AptCacheProxy, apt_cache_dir, guest_install_command, guest_remove_command

        s.apt_cache = AptCacheProxy(apt_cache_dir()).start()
        url = f"http://{GUEST_HOST_IP}:{s.apt_cache.port}"
        rc = s.comm.run(guest_install_command(url), timeout=60, stdout_cb=s.log.debug, stderr_cb=s.log.info)
        if rc != 0:
            raise BakerError(f"could not point the guest's apt at the cache (exit {rc})",
                             hint="the build user needs passwordless sudo; or build without --apt-cache")
        s.before_shutdown.append(("remove the apt cache setting", guest_remove_command()))
        s.log.info("guest apt downloads go through the cache at %s", url)

    def cleanup(self, s: BuildState) -> None:
        if s.apt_cache is not None:
            s.log.info("apt cache: %s", s.apt_cache.stats.summary())
            s.apt_cache.close()
            s.apt_cache = None
