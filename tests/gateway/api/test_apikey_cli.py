"""`gateway apikey create|list|revoke`: a revoked key stops working at once."""

from __future__ import annotations

from click.testing import CliRunner

from gateway.cli import main
from tests.support.api import bearer


def test_create_list_and_revoke(client, configured, database_url):
    runner = CliRunner()
    env = {"DATABASE_URL": database_url}
    created = runner.invoke(main, ["apikey", "create", "--name", "crm-sync", "--store", "north-honda"], env=env)
    assert created.exit_code == 0, created.output
    key = created.output.strip().splitlines()[-1]
    assert client.get("/api/v1/leads", headers=bearer(key)).status_code == 200

    listed = runner.invoke(main, ["apikey", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    (line,) = [row for row in listed.output.splitlines() if "crm-sync" in row]
    _key_id, prefix, name, scope, state = line.split("\t")
    assert (name, scope, state) == ("crm-sync", "north-honda", "active")
    assert key not in listed.output  # never the secret
    assert prefix in key

    revoked = runner.invoke(main, ["apikey", "revoke", prefix], env=env)
    assert revoked.exit_code == 0, revoked.output
    response = client.get("/api/v1/leads", headers=bearer(key))
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert "revoked" in runner.invoke(main, ["apikey", "list"], env=env).output

    unknown = runner.invoke(main, ["apikey", "revoke", "nope"], env=env)
    assert unknown.exit_code != 0
    assert "no key" in unknown.output


def test_create_for_an_unknown_store_fails(configured, database_url):
    result = CliRunner().invoke(
        main, ["apikey", "create", "--name", "x", "--store", "nowhere"], env={"DATABASE_URL": database_url}
    )
    assert result.exit_code != 0
    assert "unknown store" in result.output


def test_a_prefix_of_decimal_digits_names_its_key_not_the_key_with_that_id(
    client, configured, database_url, monkeypatch
):
    from gateway.api import keys

    runner = CliRunner()
    env = {"DATABASE_URL": database_url}
    first = runner.invoke(main, ["apikey", "create", "--name", "first"], env=env)
    first_key = first.output.strip().splitlines()[-1]
    first_id = next(
        row.split("\t")[0] for row in runner.invoke(main, ["apikey", "list"], env=env).output.splitlines()
        if "\tfirst\t" in row
    )
    digits = first_id.zfill(8)  # a hex prefix that reads as the first key's id
    monkeypatch.setattr(keys.secrets, "token_hex", lambda _nbytes: digits)
    second = runner.invoke(main, ["apikey", "create", "--name", "second"], env=env)
    second_key = second.output.strip().splitlines()[-1]

    revoked = runner.invoke(main, ["apikey", "revoke", digits], env=env)
    assert revoked.exit_code == 0, revoked.output
    assert "'second'" in revoked.output
    assert client.get("/api/v1/leads", headers=bearer(second_key)).status_code == 401
    assert client.get("/api/v1/leads", headers=bearer(first_key)).status_code == 200

    by_id = runner.invoke(main, ["apikey", "revoke", first_id], env=env)
    assert by_id.exit_code == 0, by_id.output
    assert client.get("/api/v1/leads", headers=bearer(first_key)).status_code == 401


def test_a_good_key_is_served_from_an_address_that_used_up_its_unknown_keys(client, configured, database_url):
    created = CliRunner().invoke(main, ["apikey", "create", "--name", "crm-sync"], env={"DATABASE_URL": database_url})
    key = created.output.strip().splitlines()[-1]
    for _ in range(30):
        assert client.get("/api/v1/leads", headers=bearer("gw_scanner_x")).status_code == 401
    refused = client.get("/api/v1/leads", headers=bearer("gw_scanner_x"))
    assert refused.status_code == 429
    assert refused.get_json()["error"]["code"] == "too_many_failed_keys"
    # The same address (a dealership's shared office line), with a key that exists.
    assert client.get("/api/v1/leads", headers=bearer(key)).status_code == 200
