"""Per-build secrets and media: SSH keys, the cloud-init seed, the extra CD, the HTTP server."""

from __future__ import annotations

import uuid

from baker.state import BuildState


class MakeSeed:
    name = "keys-and-seed"

    def run(self, s: BuildState) -> None:
        from baker.keys import generate_build_keys

        assert s.work_dir is not None
        t = s.template
        if s.keys is None:  # else a resumed checkpoint's (baker.checkpoint.session)
            s.keys = generate_build_keys(s.work_dir)
            s.log.info("build key and guest host key generated (host key %s)", s.keys.fingerprint())
        s.instance_id = s.instance_id or f"baker-{uuid.uuid4()}"
        if t.source.cloud_image is not None and t.source.cloud_init.enabled:
            from baker.seed import write_seed

            s.seed = write_seed(
                s.work_dir / "seed.iso", hostname=t.name, instance_id=s.instance_id,
                username=t.communicator.ssh_username if t.communicator.type == "ssh" else None,
                keys=s.keys, cloud_init=t.source.cloud_init,
                password=t.communicator.ssh_password,
            )
            s.cdroms.append(s.seed)
            self._say_lean_boot(s)

    def _say_lean_boot(self, s: BuildState) -> None:
        from baker.lean_boot import lean_module_lists

        ci = s.template.source.cloud_init
        if not ci.lean_boot:
            return
        lists, why_not = lean_module_lists(ci.user_data or {}, password=s.template.communicator.ssh_password
                                           is not None)
        if why_not:
            s.log.info("lean boot off: %s; cloud-init runs every module on the build boot", why_not)
        else:
            s.log.debug("lean boot: cloud-init config modules %s, final modules %s",
                        lists["cloud_config_modules"], lists["cloud_final_modules"])

    def cleanup(self, s: BuildState) -> None:
        pass  # keys and seed live in the 0700 work dir, removed with it


class MakeCD:
    name = "make-cd"

    def run(self, s: BuildState) -> None:
        from baker.cdrom import build_cd
        from baker.template import render_late

        assert s.work_dir is not None
        src = s.template.source
        content = {k: render_late(v, s.template, s.build_vars()) for k, v in src.cd_content.items()}
        cd = build_cd(s.work_dir / "cd.iso", files=src.cd_files, content=content, label=src.cd_label,
                      base_dir=s.template.path.parent)
        s.cdroms.append(cd)

    def cleanup(self, s: BuildState) -> None:
        pass


class ServeHTTP:
    name = "http-server"

    def run(self, s: BuildState) -> None:
        from baker.httpserver import HTTPServer
        from baker.template import render_late

        src = s.template.source
        server = HTTPServer(directory=src.http_directory)  # binds now: build.http_port is known
        s.http = server
        build = s.build_vars()
        server.set_content({k: render_late(v, s.template, build, path=f"source.http_content.{k}")
                            for k, v in src.http_content.items()})
        server.start()

    def cleanup(self, s: BuildState) -> None:
        if s.http is not None:
            s.http.close()
            s.http = None
