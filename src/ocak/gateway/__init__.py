"""The gateway: aliases over local engines and remote providers (see ``ocak.gateway.router``)."""
