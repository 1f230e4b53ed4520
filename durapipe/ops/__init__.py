"""Operating durapipe: a local dev server, recorded-history replay, schedules, search-attribute setup,
the codec server for Temporal's UI, telemetry, and warming a worker up."""

from durapipe.client._runs import check_search_attributes, setup_search_attributes
from durapipe.ops._codec_server import codec_app
from durapipe.ops._dev import DevServer, dev_ui_url
from durapipe.ops._replay import ReplayReport, fetch_histories, load_history, replay
from durapipe.ops._schedules import (
    ScheduleNotFound,
    ScheduleSummary,
    create_schedule,
    delete_schedule,
    list_schedules,
    pause_schedule,
    trigger_schedule,
    unpause_schedule,
)
from durapipe.worker import freeze_startup_objects, warm_up

__all__ = [
    "DevServer",
    "ReplayReport",
    "ScheduleNotFound",
    "ScheduleSummary",
    "check_search_attributes",
    "codec_app",
    "create_schedule",
    "delete_schedule",
    "dev_ui_url",
    "fetch_histories",
    "freeze_startup_objects",
    "list_schedules",
    "load_history",
    "pause_schedule",
    "replay",
    "setup_search_attributes",
    "trigger_schedule",
    "unpause_schedule",
    "warm_up",
]
