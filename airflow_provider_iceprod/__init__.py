"""Apache Airflow provider for IceProd (IceCube's dataset and job management system).

Importing the package is cheap on purpose: it sets only ``__version__``. Import the hooks,
operators, sensors and triggers from their own modules.
"""

__version__ = "0.1.0"
