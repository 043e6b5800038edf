"""Entry point of the `covidct` command: imports the sub-command modules, which register themselves."""

from __future__ import annotations

import importlib

from covidct.cli.app import app

COMMAND_MODULES = (
    "covidct.cli.data_commands",  # inspect, convert, synth, preprocess, slices
    "covidct.cli.cohort_commands",  # cohort
    "covidct.cli.model_commands",  # models, configs, export
    "covidct.cli.weights_commands",  # import-weights
    "covidct.cli.train_commands",  # train
    "covidct.cli.multisource_commands",  # build-cohort, loso
    "covidct.cli.cache_commands",  # cache
    "covidct.cli.eval_commands",  # evaluate
    "covidct.cli.explain_commands",  # explain
    "covidct.cli.service_commands",  # predict, triage, serve, token, dicom-listen
    "covidct.cli.fuse_commands",  # fuse fit
    "covidct.cli.ohif_commands",  # ohif-config
)


def load_commands() -> None:
    for module in COMMAND_MODULES:
        importlib.import_module(module)


def main() -> None:
    load_commands()
    app()


if __name__ == "__main__":
    main()
