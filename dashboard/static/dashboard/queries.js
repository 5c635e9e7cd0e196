// The GraphQL documents of the runs page (queries and subscriptions only: the page changes
// nothing), and `api(socket)`: query(name, variables), which waits for the connection and asks
// again when it dropped mid-way, and subscribe(name, variables(), handlers).

import { ConnectionLost } from "./graphql-socket.js";

// What the table and the chart read of a run; all of it comes with a live event. Events and the
// open run carry their `cursor` too (their place in the organization's stream), not the pages.
const RUN = "id seq status trigger event objectType objectId dryRun createdAt startedAt durationMs rule { id name }";
// What the open run shows besides; the relations (organization, triggeredBy, retryOf) only in
// the query, since a live event carries none of them.
const TRACE = "path field operator expected actual passed error";
const RUN_DETAIL = `${RUN} ruleRevision conditionsMet error depth finishedAt resumeAt
  conditionTrace { ${TRACE} }
  hold { holdFor until checkedAt met note trace { ${TRACE} } }
  actionLogs { order actionType status attempt durationMs result error }`;

export const DOCUMENTS = {
  organizations: `query RunsPageOrganizations($offset: Int!, $limit: Int!) {
    me { username }
    organizations(offset: $offset, limit: $limit) { id name viewerRole }
  }`,
  rules: `query RunsPageRules($organization: ID!, $offset: Int!, $limit: Int!) {
    rules(organization: $organization, offset: $offset, limit: $limit) { id name }
  }`,
  logs: `query RunsPageLogs($organization: ID!, $filter: LogFilter, $first: Int!, $after: String) {
    logs(organization: $organization, filter: $filter, first: $first, after: $after) {
      streamCursor
      edges { node { ${RUN} } }
      pageInfo { hasNextPage endCursor }
    }
  }`,
  log: `query RunsPageLog($id: ID!) {
    log(id: $id) {
      ${RUN_DETAIL} cursor
      organization { id }
      triggeredBy { username }
      retryOf { id }
    }
  }`,
  // Each subscription starts `after` a cursor: every event since it, then live ones.
  runsLive: `subscription RunsPageRuns(
    $organization: ID!, $rule: ID, $statuses: [RunStatus!], $after: String
  ) {
    automationLogs(organization: $organization, rule: $rule, statuses: $statuses, after: $after) {
      ${RUN} cursor
    }
  }`,
  runLive: `subscription RunsPageRun($organization: ID!, $rule: ID!, $after: String) {
    automationLogs(organization: $organization, rule: $rule, after: $after) {
      ${RUN_DETAIL} cursor
    }
  }`,
  actionsLive: `subscription RunsPageActions($organization: ID!, $log: ID!, $after: String) {
    actionUpdates(organization: $organization, log: $log, after: $after) {
      logId seq cursor
      action { order actionType status attempt durationMs result error }
    }
  }`,
};

export function api(socket) {
  async function query(name, variables) {
    for (;;) {
      await socket.whenOpen();
      try {
        return await socket.request(DOCUMENTS[name], variables);
      } catch (error) {
        if (!(error instanceof ConnectionLost)) throw error;
      }
    }
  }

  const subscribe = (name, variables, handlers) =>
    socket.subscribe(DOCUMENTS[name], variables, handlers);

  return { query, subscribe };
}
