"""The build boot's cloud-init module lists: only what the build needs, the rest is each clone's work.

On the build boot cloud-init's config and final stages (apt sources, locale, ntp, timezone, grub-dpkg,
host-key fingerprints to the console, ...) take about 8 s under TCG before `cloud-init status --wait`
returns, and their results are discarded: generalize runs `cloud-init clean`, so every clone runs them
again at its first boot. The init stage (users, SSH keys: what baker itself needs) always runs in full.

User-data keys that need a config or final module keep it; a key this table does not know turns the
trimming off for that build, so a template never loses a setting it asked for.
"""

from __future__ import annotations

from typing import Any

# keys the init stage (cloud_init_modules, always kept) or the datasource handles
_INIT_KEYS = frozenset({
    "users", "groups", "user", "ssh_pwauth", "disable_root", "disable_root_opts", "ssh_deletekeys",
    "ssh_genkeytypes", "ssh_keys", "ssh_authorized_keys", "ssh_quiet_keygen", "ssh_publish_hostkeys",
    "allow_public_ssh_keys", "bootcmd", "write_files", "growpart", "resize_rootfs", "disk_setup",
    "fs_setup", "mounts", "mount_default_fields", "swap", "hostname", "fqdn", "prefer_fqdn_over_hostname",
    "preserve_hostname", "create_hostname_file", "manage_etc_hosts", "ca_certs", "ca-certs", "rsyslog",
    "random_seed", "seed_random", "device_aliases", "merge_how", "merge_type", "_merge",
})
# key -> the config/final modules it needs (names as Debian 12's cloud.cfg spells them)
_MODULES_FOR_KEY: dict[str, tuple[str, ...]] = {
    "ssh_import_id": ("ssh-import-id",),
    "keyboard": ("keyboard",),
    "locale": ("locale",), "locale_configfile": ("locale",),
    "chpasswd": ("set-passwords",), "password": ("set-passwords",),
    "grub_dpkg": ("grub-dpkg",), "grub-dpkg": ("grub-dpkg",),
    "apt_pipelining": ("apt-pipelining",),
    "apt": ("apt-configure",),
    "ntp": ("ntp",), "timezone": ("timezone",),
    "disable_ec2_metadata": ("disable-ec2-metadata",),
    "runcmd": ("runcmd", "scripts-user"),
    "snap": ("snap",), "byobu_by_default": ("byobu",),
    "packages": ("package-update-upgrade-install",), "package_update": ("package-update-upgrade-install",),
    "package_upgrade": ("package-update-upgrade-install",), "apt_update": ("package-update-upgrade-install",),
    "apt_upgrade": ("package-update-upgrade-install",),
    "package_reboot_if_required": ("package-update-upgrade-install",),
    "puppet": ("puppet",), "chef": ("chef",), "salt_minion": ("salt-minion",),
    "mcollective": ("mcollective",), "landscape": ("landscape",), "lxd": ("lxd",), "fan": ("fan",),
    "phone_home": ("phone-home",), "power_state": ("power-state-change",),
    "final_message": ("final-message",),
}
_CONFIG_MODULES = ("ssh-import-id", "keyboard", "locale", "set-passwords", "grub-dpkg", "apt-pipelining",
                   "apt-configure", "ntp", "timezone", "disable-ec2-metadata", "runcmd", "snap", "byobu")
# always kept in final: scripts the image itself ships (per-boot, per-instance...) still run, and
# final-message marks the end of cloud-init on the serial console
_FINAL_ALWAYS = ("write-files-deferred", "scripts-vendor", "scripts-per-once", "scripts-per-boot",
                 "scripts-per-instance", "scripts-user", "final-message")
_MODULE_LIST_KEYS = ("cloud_init_modules", "cloud_config_modules", "cloud_final_modules")


def lean_module_lists(user_data: dict[str, Any], *, password: bool) -> tuple[dict[str, list[str]], str]:
    """The config/final module lists for the build boot, or ({}, why not) when trimming is off."""
    if any(k in user_data for k in _MODULE_LIST_KEYS):
        return {}, "user_data sets cloud-init's module lists itself"
    unknown = sorted(k for k in user_data if k not in _INIT_KEYS and k not in _MODULES_FOR_KEY)
    if unknown:
        return {}, f"user_data has keys lean_boot does not know ({', '.join(unknown)})"
    wanted = {m for k in user_data for m in _MODULES_FOR_KEY.get(k, ())}
    if password:
        wanted.add("set-passwords")  # ssh_pwauth: true takes effect there
    config = [m for m in _CONFIG_MODULES if m in wanted]
    final = [*(m for m in sorted(wanted) if m not in _CONFIG_MODULES and m not in _FINAL_ALWAYS),
             *_FINAL_ALWAYS]
    return {"cloud_config_modules": config, "cloud_final_modules": final}, ""
