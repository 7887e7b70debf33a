"""Hydra discovers sweepers and launchers only under the `hydra_plugins` namespace; these are shims
over the `sweeps` package."""
