"""The long-context quality study: TNL, softmax, hybrid trained alike, then evaluated."""
