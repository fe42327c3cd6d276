packer {
  required_plugins {
    qemu = {
      version = ">= 1.0.9"
      source  = "github.com/hashicorp/qemu"
    }
  }
}

variable "iso_url" {
  type    = string
  default = "https://cdimage.debian.org/debian-cd/current/amd64/iso-cd/debian-12.5.0-amd64-netinst.iso"
}

variable "iso_checksum" {
  type    = string
  default = "sha256:013f5b44670d81280b5b1bc02455842b250df2f0c6763398feb69af1a805a14f"
}

variable "ssh_password" {
  type      = string
  sensitive = true
}

variable "cpus" {
  type    = number
  default = 2
}

locals {
  build_stamp = formatdate("YYYYMMDD", timestamp())
}

source "qemu" "debian12" {
  iso_url           = var.iso_url
  iso_checksum      = var.iso_checksum
  cpus              = var.cpus
  memory            = 1024
  disk_size         = "8G"
  machine_type      = "q35"
  efi_boot          = true
  efi_firmware_code = "/usr/share/OVMF/OVMF_CODE_4M.fd"
  efi_firmware_vars = "/usr/share/OVMF/OVMF_VARS_4M.fd"
  net_device        = "virtio-net"
  disk_interface    = "virtio"
  http_directory    = "http"
  boot_wait         = "5s"
  boot_command = [
    "<wait><esc><wait>",
    "auto preseed/url=http://{{ .HTTPIP }}:{{ .HTTPPort }}/preseed.cfg ",
    "debian-installer=en_US.UTF-8 locale=en_US.UTF-8 keymap=us hostname=debian domain=local<enter>"
  ]
  vnc_port_min     = 5901
  ssh_username     = "packer"
  ssh_password     = var.ssh_password
  ssh_timeout      = "30m"
  ssh_pty          = true
  shutdown_command = "echo '${var.ssh_password}' | sudo -S /sbin/shutdown -hP now"
}

build {
  name    = "debian"
  sources = ["source.qemu.debian12"]

  provisioner "shell" {
    execute_command   = "echo 'packer' | sudo -S env {{ .Vars }} {{ .Path }}"
    scripts           = ["scripts/base.sh", "scripts/cleanup.sh"]
    expect_disconnect = true
  }

  provisioner "ansible" {
    playbook_file = "playbook.yml"
  }

  provisioner "shell-local" {
    inline = ["echo built at ${path.root}"]
  }

  post-processor "checksum" {
    checksum_types = ["sha256", "sha512"]
  }

  post-processors {
    post-processor "compress" {
      output = "debian-${local.build_stamp}.tar.gz"
    }
    post-processor "shell-local" {
      inline = ["echo compressed"]
    }
  }
}
