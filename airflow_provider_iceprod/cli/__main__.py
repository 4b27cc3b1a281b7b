"""``python -m airflow_provider_iceprod.cli``."""

import sys

from airflow_provider_iceprod.cli import main

sys.exit(main())
