"""The /graphql/ HTTP endpoint: GraphiQL on GET in a browser, POST for clients."""

from strawberry.django.views import GraphQLView

from graphql_api.schema import schema

graphql_view = GraphQLView.as_view(schema=schema, graphql_ide="graphiql")
