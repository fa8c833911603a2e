#!/usr/bin/env python3
"""Sends the Moesif fixtures with Moesif's own Python SDK (PyPI `moesifapi`), its base URI
pointed at Veil's collector route. Exits 0 only if the SDK saw success for every call.

Usage: moesif_sdk.py BASE_URI FIXTURES_DIR
The SDK gzips every body (Content-Encoding: gzip), as Moesif's SDKs do in production.
moesifapi 1.5.5 has no actions API; the test posts actions itself.
"""
import json
import pathlib
import sys

from moesifapi.configuration import Configuration
from moesifapi.moesif_api_client import MoesifAPIClient
from moesifapi.models import CompanyModel, EventModel, SubscriptionModel, UserModel


def main() -> int:
    base, fixtures = sys.argv[1], pathlib.Path(sys.argv[2])
    Configuration.BASE_URI = base
    api = MoesifAPIClient("veil-e2e-application-id").api

    def load(name):
        return json.loads((fixtures / name).read_text(encoding="utf-8"))

    events = load("events-batch.json")
    users = load("users-batch.json")
    companies = load("companies-batch.json")
    subscriptions = load("subscriptions-batch.json")
    calls = [
        ("create_event", lambda: api.create_event(EventModel.from_dictionary(load("event.json")))),
        ("create_events_batch", lambda: api.create_events_batch([EventModel.from_dictionary(e) for e in events])),
        ("update_user", lambda: api.update_user(UserModel.from_dictionary(users[0]))),
        ("update_users_batch", lambda: api.update_users_batch([UserModel.from_dictionary(u) for u in users])),
        ("update_company", lambda: api.update_company(CompanyModel.from_dictionary(companies[0]))),
        ("update_companies_batch", lambda: api.update_companies_batch([CompanyModel.from_dictionary(c) for c in companies])),
        ("update_subscription", lambda: api.update_subscription(SubscriptionModel.from_dictionary(subscriptions[0]))),
        ("update_subscriptions_batch", lambda: api.update_subscriptions_batch([SubscriptionModel.from_dictionary(s) for s in subscriptions])),
    ]
    for name, call in calls:
        call()  # raises APIException on any non-2xx answer
        print(f"ok {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
