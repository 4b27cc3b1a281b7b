"""Hooks. Import :class:`~airflow_provider_iceprod.hooks.iceprod.IceProdHook` from ``hooks.iceprod``."""
