"""Post-export hooks: `post:` steps that run once the artifacts are published.

They see the published files, never the staging dir, and they cannot unpublish: a failing hook fails
the build (exit 1, the step named, its output tail) while the new image stays in the output dir.
"""

from __future__ import annotations

from baker.post.checksum import write_digest_files
from baker.post.context import PostContext
from baker.post.shell import run_shell_hook

__all__ = ["PostContext", "run_shell_hook", "write_digest_files"]
