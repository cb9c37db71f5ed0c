"""Running the gateway: the admin API, reload across replicas, the policy view."""
