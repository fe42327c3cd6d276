"""Inventory of the packages installed in the guest, as CycloneDX 1.6 JSON, and diffs between versions."""

SBOM_FILE = "sbom.cdx.json"
