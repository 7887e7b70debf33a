"""`hydra/sweeper=isoflop`: the IsoFLOP grid as a Hydra sweep. Hydra only instantiates plugin
classes defined under `hydra_plugins`, so this is a named shim over sweeps.sweeper."""
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from sweeps import sweeper


class IsoflopSweeper(sweeper.IsoflopSweeper):
    pass


@dataclass
class IsoflopSweeperConf:
    _target_: str = "hydra_plugins.isoflop.isoflop_sweeper.IsoflopSweeper"


ConfigStore.instance().store(group="hydra/sweeper", name="isoflop", node=IsoflopSweeperConf, provider="isoflop")
