"""Guests' apt downloads through a caching proxy on the host, so a nightly rebuild downloads nothing new."""

from baker.aptcache.guest import GUEST_CONF, guest_install_command, guest_remove_command
from baker.aptcache.proxy import AptCacheProxy, CacheStats, cache_file, cacheable
from baker.aptcache.prune import apt_cache_dir, prune, usage

__all__ = ["GUEST_CONF", "AptCacheProxy", "CacheStats", "apt_cache_dir", "cache_file", "cacheable",
           "guest_install_command", "guest_remove_command", "prune", "usage"]
