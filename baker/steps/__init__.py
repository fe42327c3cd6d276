"""The build's steps, one module per concern; `plan_steps` orders them for a template."""

from __future__ import annotations

from baker.steps.aptcache import UseAptCache
from baker.steps.connect import WaitForSSH
from baker.steps.export import ExportImages
from baker.steps.inventory import InventoryPackages
from baker.steps.machine import StartMachine, TypeBootCommand
from baker.steps.media import MakeCD, MakeSeed, ServeHTTP
from baker.steps.policy import EvaluatePolicy, RunScan
from baker.steps.post import PostStep
from baker.steps.prepare import PrepareDirs
from baker.steps.provenance import WriteProvenance
from baker.steps.provision import Provision
from baker.steps.record import Publish, RecordManifest
from baker.steps.shutdown import ShutDown
from baker.steps.source import CreateDisk, FetchSource
from baker.steps.store import RecordInStore
from baker.template.checks import checkpoints_unsupported
from baker.template.model import Template


def plan_steps(t: Template, *, apt_cache: bool = False) -> list:
    checkpoints = t.checkpoints and checkpoints_unsupported(t) is None
    provisions = [Provision(i, p) for i, p in enumerate(t.provisioners, 1)]
    steps: list = [PrepareDirs(), FetchSource(), CreateDisk()]
    if checkpoints:
        from baker.checkpoint.steps import PrepareCheckpoints

        steps.append(PrepareCheckpoints([p.name for p in provisions]))
    steps.append(MakeSeed())
    if t.source.cd_files or t.source.cd_content:
        steps.append(MakeCD())
    if t.source.http_directory or t.source.http_content:
        steps.append(ServeHTTP())
    steps.append(StartMachine())
    if t.source.boot_command:
        steps.append(TypeBootCommand())
    if t.communicator.type == "ssh":
        steps.append(WaitForSSH())
        if apt_cache:
            steps.append(UseAptCache())
        if checkpoints:
            from baker.checkpoint.steps import SaveCheckpoint, WaitAfterResume

            steps.append(WaitAfterResume())
            for p in provisions:
                steps += [p, SaveCheckpoint(p.index, p.name)]
        else:
            steps += provisions
        steps.append(InventoryPackages())
        if t.policy.enabled:
            steps.append(EvaluatePolicy())
    steps += [ShutDown(), ExportImages()]
    if t.scan is not None:
        steps.append(RunScan())
    steps += [RecordManifest(), WriteProvenance(), Publish(), RecordInStore()]
    steps += [PostStep(i, p) for i, p in enumerate(t.post, 1)]
    return steps
