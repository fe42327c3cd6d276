"""The built-in image policy (run in the guest before shutdown) and its result, policy.json."""

POLICY_FILE = "policy.json"
