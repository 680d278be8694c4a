"""Sign-in with Discord: allauth's Discord provider, with Discord's OAuth2 endpoints taken from
DISCORD_OAUTH_BASE (so tests point them at a local fake Discord)."""
