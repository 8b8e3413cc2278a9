"""`gateway simulate sms`: a customer's text, posted and signed the way the provider posts it."""

from __future__ import annotations

import click

from gateway.settings import settings_for_command


def register(main: click.Group) -> None:
    simulate = main.commands.get("simulate")
    if isinstance(simulate, click.Group):
        simulate.add_command(simulate_sms)




@click.command("sms")
@click.option("--to", "to", required=True, help="The tracked number texted.")
@click.option("--from", "from_", required=True, help="The customer's (or an agent's) phone.")
@click.option("--body", default="", help="The text; empty for a picture only.")
@click.option("--media", multiple=True, help="A picture URL (MMS); repeat for several.")
@click.option("--url", default=None, help="The gateway's base URL (default: where `gateway serve` listens, "
              "else PUBLIC_BASE_URL).")
def simulate_sms(to: str, from_: str, body: str, media: tuple[str, ...], url: str | None) -> None:
    """A text to a tracked number, as the provider delivers it to the SMS URL."""
    from gateway.simulator import SimulationError, play_text, poster_for

    if not body and not media:
        raise click.UsageError("give --body, --media or both")
    poster = poster_for(settings_for_command(), url)
    try:
        lines = list(play_text(poster, to=to, sender=from_, body=body, media=list(media)))
    except SimulationError as error:
        raise click.ClickException(str(error)) from None
    for line in lines:
        click.echo(line)
    if "answered 200" not in lines[0]:
        raise click.ClickException("the gateway did not take the text")
