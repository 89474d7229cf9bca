"""The mlmarket ML worker: consumes prediction tasks, runs models from the artifact store, settles or refunds."""
